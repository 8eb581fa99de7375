"""The calico.toml the lab writes for each node.

The file format belongs to pycalico's config schema, not to the lab: this is
the only place the lab produces it, so a schema change is a change here.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path


def _toml_str(s: str) -> str:
    # JSON string escapes are a valid TOML basic string.
    return json.dumps(s)


def node_config_text(node_name: str, etcd_endpoints: Sequence[str], routing: str = "none",
                     policy: str = "iptables", node_dir: str | Path | None = None) -> str:
    """One node's calico.toml. ``node_dir`` holds what the node's daemons keep on disk
    (BIRD's config, control socket and BGP secrets), since lab nodes share the machine's /etc and /run."""
    endpoints = ", ".join(_toml_str(e) for e in etcd_endpoints)
    text = (
        f"node_name = {_toml_str(node_name)}\n"
        "\n"
        "[datastore]\n"
        'type = "etcd"\n'
        "\n"
        "[datastore.etcd]\n"
        f"endpoints = [{endpoints}]\n"
        "\n"
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
    return text + f"\n[policy]\ntype = {_toml_str(policy)}\n"
