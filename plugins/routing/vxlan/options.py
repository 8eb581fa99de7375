"""``[routing.vxlan]`` in calico.toml.

Every key is optional. Left out, each takes its value from the FelixConfiguration in
the datastore (``node.<name>`` over ``default``: ``vxlanMTU``, ``vxlanVNI``,
``vxlanPort``), and Felix's default when that has none; set here, it wins over both::

    [routing]
    type = "vxlan"

    [routing.vxlan]
    mtu = 0       # vxlan.calico's MTU; 0: the host MTU less 50 (Felix's VXLANMTU)
    vni = 4096    # VXLAN network identifier (VXLANVNI)
    port = 4789   # UDP destination port (VXLANPort)
"""

from __future__ import annotations

import attrs

from pycalico.core.schema import in_range
from pycalico.plugins.routing.tunnel import MTU_RANGE


@attrs.frozen
class Options:
    mtu: int | None = attrs.field(default=None, validator=MTU_RANGE, metadata={
        "doc": "vxlan.calico's MTU; 0: the host MTU less 50 (Felix's VXLANMTU). Unset: the "
               "FelixConfiguration's vxlanMTU, else 0.",
        "example": 0})
    vni: int | None = attrs.field(default=None, validator=in_range(1, 0xFFFFFF), metadata={
        "doc": "The VXLAN network identifier (VXLANVNI). Unset: the FelixConfiguration's vxlanVNI, else 4096.",
        "example": 4096})
    port: int | None = attrs.field(default=None, validator=in_range(1, 65535), metadata={
        "doc": "The UDP destination port (VXLANPort). Unset: the FelixConfiguration's vxlanPort, else 4789.",
        "example": 4789})
