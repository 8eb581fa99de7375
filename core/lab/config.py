"""The calico.toml the lab writes for each node.

The file format belongs to pycalico's config schema, not to the lab: this is
the only place the lab produces it, so a schema change is a change here.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from .state import TyphaRecord


def _toml_str(s: str) -> str:
    # JSON string escapes are a valid TOML basic string.
    return json.dumps(s)


def _datastore_text(etcd_endpoints: Sequence[str]) -> str:
    endpoints = ", ".join(_toml_str(e) for e in etcd_endpoints)
    return f'[datastore]\ntype = "etcd"\n\n[datastore.etcd]\nendpoints = [{endpoints}]\n'


def node_config_text(node_name: str, etcd_endpoints: Sequence[str], routing: str = "none",
                     policy: str = "iptables", node_dir: str | Path | None = None,
                     typha_addresses: Sequence[str] = ()) -> str:
    """One node's calico.toml. ``node_dir`` holds what the node's daemons keep on disk
    (BIRD's config, control socket and BGP secrets, the nodename file), since lab nodes
    share the machine's /etc, /var and /run.
    With ``typha_addresses`` the agent reads through those Typhas instead of watching etcd."""
    text = (
        f"node_name = {_toml_str(node_name)}\n"
        "\n"
        + _datastore_text(etcd_endpoints)
        + "\n"
        "[routing]\n"
        f"type = {_toml_str(routing)}\n"
    )
    if routing == "bird" and node_dir is not None:
        bird = Path(node_dir) / "bird"
        text += (
            "\n[routing.bird]\n"
            f"config_dir = {_toml_str(str(bird))}\n"
            f"socket = {_toml_str(str(bird / 'bird.ctl'))}\n"
            f"secrets_dir = {_toml_str(str(bird / 'secrets'))}\n"
        )
    if node_dir is not None:
        # Lab nodes share the machine's /var/lib: the name goes in the node's own directory.
        text += f"\n[node]\nnodename_file = {_toml_str(str(Path(node_dir) / 'nodename'))}\n"
    text += f"\n[policy]\ntype = {_toml_str(policy)}\n"
    if typha_addresses:
        text += f"\n[typha]\naddresses = [{', '.join(_toml_str(a) for a in typha_addresses)}]\n"
    return text


def typha_config_text(etcd_endpoints: Sequence[str], typha: TyphaRecord) -> str:
    """The calico.toml of one calico-typha replica: the lab's etcd, and its own ports,
    since every replica shares the control-plane namespace. Health stays on localhost
    (Typha's default, where a kubelet would probe it); metrics are on the cp address,
    reachable from the nodes as a Prometheus in the cluster would scrape them."""
    host = _toml_str(typha.host)
    return (
        _datastore_text(etcd_endpoints)
        + f"\n[typha.server]\nhost = {host}\nport = {typha.port}\n"
        + f"\n[typha.server.health]\nport = {typha.health_port}\n"
        + f"\n[typha.server.metrics]\nenabled = true\nhost = {host}\nport = {typha.metrics_port}\n"
    )
