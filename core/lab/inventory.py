"""An Ansible inventory of a lab's bare nodes, reached through the ``calico_lab``
connection plugin (ansible/connection_plugins/calico_lab.py)."""

from __future__ import annotations

from typing import Any

from .cluster import Lab
from .state import LabError

GROUP = "calico_lab_nodes"
# Debian's interpreter, as on a bare-metal node; the remote temp directory under the
# node's own /var, since /tmp is the host's; and the role's own supervisor, since a
# node's pid 1 is the host's init, which is not the node's to use.
HOST_VARS = {
    "ansible_connection": "calico_lab",
    "ansible_python_interpreter": "/usr/bin/python3",
    "ansible_remote_tmp": "/var/tmp/.ansible-tmp",
    "calico_node_service_manager": "supervisor",
}


def inventory(lab: Lab) -> dict[str, Any]:
    """The inventory as Ansible's YAML inventory plugin reads it."""
    if not lab.state.bare:
        raise LabError(f"lab {lab.name!r} has no bare nodes to provision; "
                       f"create one with `calico-lab up --bare`")
    return {"all": {"children": {GROUP: {
        "hosts": {n.name: {"calico_lab_ip": n.cidr} for n in lab.nodes},
        "vars": {
            **HOST_VARS,
            "calico_lab_name": lab.name,
            "calico_lab_state_root": str(lab.state_dir.parent),
            "calico_lab_etcd_endpoints": list(lab.etcd_endpoints),
        },
    }}}}
