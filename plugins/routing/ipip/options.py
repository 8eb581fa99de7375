"""``[routing.ipip]`` in calico.toml.

Left out, ``mtu`` takes its value from the FelixConfiguration in the datastore
(``ipipMTU``, ``node.<name>`` over ``default``), else Felix's default 0::

    [routing]
    type = "ipip"

    [routing.ipip]
    mtu = 0   # tunl0's MTU; 0: the host MTU less 20 (Felix's IpInIpMtu)
"""

from __future__ import annotations

import attrs

from pycalico.plugins.routing.tunnel import MTU_RANGE


@attrs.frozen
class Options:
    mtu: int | None = attrs.field(default=None, validator=MTU_RANGE, metadata={
        "doc": "tunl0's MTU; 0: the host MTU less 20 (Felix's IpInIpMtu). Unset: the "
               "FelixConfiguration's ipipMTU, else 0.",
        "example": 0})
