"""One node as the checks see it: the gathered outputs read with pycalico's own code.

The node's calico.toml is structured by :mod:`pycalico.core.config` and its plugins'
tables by the installed plugins, the ``calicoctl get -o json`` lists by the resource
codec, and together with the IPAM blocks (from ``calicoctl ipam check``, which lists
every block with its affinity) they make the :class:`~pycalico.core.calc.DesiredState`
that the agent of that node would compute. The checks then ask the plugins' own
functions what the node should have.
"""

from __future__ import annotations

import ipaddress
import json
import re
import socket
from functools import cached_property
from typing import Any

from pycalico.core import config as cfg
from pycalico.core.calc import DesiredState
from pycalico.core.plugins import PluginError, Plugins
from pycalico.core.resources import ResourceError, load_resources
from pycalico.core.resources.ipam import IPAMBlock

from .gather import RESOURCES, Output, Settings

BLOCK_LINE = re.compile(r"^ IPAM block (\S+) affinity=(.*):$", re.M)


class Unavailable(Exception):
    """What a check needs could not be had from the node; the message says why."""


class NotApplicable(Exception):
    """The check does not apply to this node; the message says why."""


class NodeView:
    """The gathered outputs of one node (section name -> :class:`Output`)."""

    def __init__(self, settings: Settings, outputs: dict[str, Output]):
        self.settings = settings
        self.outputs = outputs

    def output(self, name: str) -> Output:
        return self.outputs[name]

    def text(self, name: str, what: str) -> str:
        """A probe's standard output; Unavailable if it failed."""
        out = self.outputs[name]
        if not out.ok:
            raise Unavailable(out.failure(what))
        return out.out

    def json(self, name: str, what: str) -> Any:
        text = self.text(name, what)
        try:
            return json.loads(text)
        except ValueError as exc:
            raise Unavailable(f"{what} did not print JSON: {exc}") from None

    # --- calico.toml -------------------------------------------------------------------

    @cached_property
    def config(self) -> cfg.Config:
        """The file's own keys (plugin tables unstructured); Unavailable if unreadable."""
        path = self.settings.calico_config
        text = self.text("config", f"reading {path}")
        try:
            return cfg.parse(text, path)
        except cfg.ConfigError as exc:
            raise Unavailable(str(exc)) from None

    def options(self, slot: str) -> Any:
        """The chosen plugin's table of ``slot``, structured by that plugin's schema."""
        try:
            loaded = Plugins.load(self.config, self.settings.calico_config, configure=False, slots=(slot,))
        except (cfg.ConfigError, PluginError) as exc:
            raise Unavailable(str(exc)) from None
        return loaded.config.slot(slot).options

    @cached_property
    def name(self) -> str:
        """The node's name as calico-node picks it: calico.toml's ``node_name``, else the
        host name (lower case)."""
        try:
            if self.config.node_name:
                return self.config.node_name
        except Unavailable:
            pass
        out = self.outputs["hostname"]
        return out.out.strip().lower() if out.ok and out.out.strip() else "(unknown node)"

    # --- the datastore, as the node's agent sees it -------------------------------------

    def resources(self, kind: str) -> tuple:
        plural = RESOURCES[kind][0]
        what = f"calicoctl get {plural}"
        text = self.text(kind, what)
        try:
            return tuple(load_resources(text, what))
        except ResourceError as exc:
            raise Unavailable(f"{what}: {exc}") from None

    @cached_property
    def blocks(self) -> tuple[IPAMBlock, ...]:
        """Every IPAM block with its affinity, from ``calicoctl ipam check``'s listing."""
        out = self.outputs["ipam_check"]
        if "Loading all IPAM blocks..." not in out.out:
            raise Unavailable(out.failure("calicoctl ipam check"))
        return tuple(
            IPAMBlock.new(cidr, None if affinity == "<none>" else affinity)
            for cidr, affinity in BLOCK_LINE.findall(out.out)
        )

    @cached_property
    def state(self) -> DesiredState:
        resources = {kind: self.resources(kind) for kind in RESOURCES}
        resources["IPAMBlock"] = self.blocks
        return DesiredState(node_name=self.name, revision=None, resources=resources)

    # --- the kernel -------------------------------------------------------------------

    @cached_property
    def netlink(self) -> RecordedNetlink:
        return RecordedNetlink(self.json("links", "ip -d -j link show"), self.json("addrs", "ip -j -4 addr show"))

    @cached_property
    def routes(self) -> list[dict]:
        return self.json("routes", "ip -j -4 route show table main")


class _Message(dict):
    """A netlink message as pyroute2 hands it out: fields by key, attributes by
    ``get_attr``."""

    def __init__(self, fields: dict, attrs: dict):
        super().__init__(fields)
        self.attrs = attrs

    def get_attr(self, name: str, default: Any = None) -> Any:
        return self.attrs.get(name, default)


_IFF_UP = 0x1


class RecordedNetlink:
    """A read-only stand-in for pyroute2's ``IPRoute`` over what ``ip -j`` printed on
    the node, so that :mod:`pycalico.plugins.routing.tunnel`'s helpers (host MTU, data
    device) judge the node's interfaces exactly as its agent does. Links carry their
    ``ip -d -j`` record as ``IFLA_LINKINFO_JSON`` for the checks."""

    def __init__(self, links: list[dict], addrs: list[dict]):
        self._links = [
            _Message(
                {"index": link["ifindex"], "flags": _IFF_UP if "UP" in link.get("flags", ()) else 0},
                {"IFLA_IFNAME": link["ifname"], "IFLA_MTU": link.get("mtu"), "IFLA_ADDRESS": link.get("address"),
                 "IFLA_LINKINFO_JSON": link.get("linkinfo") or {}},
            )
            for link in links
        ]
        self._addrs = [
            _Message({"index": entry["ifindex"], "prefixlen": a["prefixlen"], "family": socket.AF_INET},
                     {"IFA_ADDRESS": a["local"], "IFA_LABEL": entry["ifname"]})
            for entry in addrs
            for a in entry.get("addr_info", ())
            if a.get("family") == "inet"
        ]

    def get_links(self, *indexes: int) -> list[_Message]:
        return [m for m in self._links if not indexes or m["index"] in indexes]

    def link_lookup(self, ifname: str) -> list[int]:
        return [m["index"] for m in self._links if m.get_attr("IFLA_IFNAME") == ifname]

    def get_addr(self, family: int = socket.AF_INET, index: int | None = None) -> list[_Message]:
        return [m for m in self._addrs if m["family"] == family and (index is None or m["index"] == index)]


def route_dst(route: dict) -> ipaddress.IPv4Network | None:
    """The destination of an ``ip -j route`` entry (``default`` is 0.0.0.0/0)."""
    dst = route.get("dst", "")
    try:
        return ipaddress.IPv4Network("0.0.0.0/0" if dst == "default" else dst)
    except ValueError:
        return None
