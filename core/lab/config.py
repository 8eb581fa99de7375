"""The calico.toml the lab writes for each node.

The file format belongs to pycalico's config schema, not to the lab: this is
the only place the lab produces it, so a schema change is a change here.
"""

from __future__ import annotations

import json
from collections.abc import Sequence


def _toml_str(s: str) -> str:
    # JSON string escapes are a valid TOML basic string.
    return json.dumps(s)


def node_config_text(node_name: str, etcd_endpoints: Sequence[str]) -> str:
    endpoints = ", ".join(_toml_str(e) for e in etcd_endpoints)
    return (
        f"node_name = {_toml_str(node_name)}\n"
        "\n"
        "[datastore]\n"
        'type = "etcd"\n'
        "\n"
        "[datastore.etcd]\n"
        f"endpoints = [{endpoints}]\n"
        "\n"
        "# No routing plugin runs in the lab yet: Calico's policy-only mode.\n"
        "[routing]\n"
        'type = "none"\n'
    )
