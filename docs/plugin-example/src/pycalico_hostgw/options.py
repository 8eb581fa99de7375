"""``[routing.host-gw]`` in calico.toml::

    [routing]
    type = "host-gw"

    [routing.host-gw]
    interface = ""   # "" = the interface holding this node's address

Each field's ``metadata["doc"]`` is what pycalico's calico.toml reference prints for it
(``pycalico.core.configref``), so the table documents itself as the built-in ones do.
"""

from __future__ import annotations

import attrs

from pycalico.core.schema import validated

IFNAMSIZ = 16  # the kernel's limit on an interface name, its NUL included


def _check_interface(name: str) -> None:
    if len(name.encode()) >= IFNAMSIZ or "/" in name or any(c.isspace() for c in name) or name in (".", ".."):
        raise ValueError(f"{name!r} is not an interface name (at most {IFNAMSIZ - 1} bytes, no '/' or spaces)")


@attrs.frozen
class Options:
    interface: str = attrs.field(default="", validator=validated(_check_interface), metadata={
        "doc": "The interface that faces the other nodes' subnet; routes go out of it. Empty: the "
               "one holding this node's address (`[node] ip`, as registered on its Node)."})
