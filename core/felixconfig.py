"""FelixConfiguration as one node sees it: ``node.<name>`` over ``default``, field by field."""

from __future__ import annotations

from typing import Any


def configs(state: Any) -> list:
    """This node's FelixConfigurations, the node-specific one first."""
    by_name = {c.name: c for c in state.of_kind("FelixConfiguration")}
    return [c for c in (by_name.get(f"node.{state.node_name}"), by_name.get("default")) if c is not None]


def value(found: list, attr: str) -> Any:
    """The first of ``found`` (see :func:`configs`) that sets ``attr``, else None."""
    for cfg in found:
        v = getattr(cfg.spec, attr, None)
        if v is not None:
            return v
    return None


def setting(state: Any, attr: str, default: Any) -> Any:
    """``attr`` for this node, else ``default``."""
    v = value(configs(state), attr)
    return default if v is None else v
