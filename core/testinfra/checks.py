"""The checks, one function each: a :class:`~.view.NodeView` in, the differences out.

Each returns one line per difference, saying what the node has and what it should
have (an empty list: all is well), raises :class:`~.view.NotApplicable` when the check
does not apply to the node, or :class:`~.view.Unavailable` when what it needs could not
be read. What the node should have comes from pycalico's own code, given the node's
calico.toml and the datastore as the node's calicoctl reads it: the BGP peers from the
bird plugin's model (confd's rules), the routes from Felix's route resolver
(:mod:`pycalico.plugins.routing.routes`), the VXLAN device from the vxlan plugin's
settings, the policy chains from the iptables and nftables renderers.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
from types import ModuleType

import attrs

from pycalico.core import felixconfig
from pycalico.core.cni import netconf
from pycalico.core.cni.spec import CniError
from pycalico.core.ctl.node import PEER_TYPES
from pycalico.core.policy import compile as compile_policy
from pycalico.plugins.policy.iptables import kernel as ipt_kernel
from pycalico.plugins.policy.iptables import static as ipt_static
from pycalico.plugins.policy.iptables.ruleset import render_config
from pycalico.plugins.policy.nftables import names as nft_names
from pycalico.plugins.policy.nftables import render as nft_render
from pycalico.plugins.policy.nftables.state import parse_table
from pycalico.plugins.routing import ipip, routes, tunnel, vxlan
from pycalico.plugins.routing.bird import model as bird_model
from pycalico.plugins.routing.vxlan.vtep import vtep_of

from .view import NodeView, NotApplicable, Unavailable, route_dst

# The CNI executables a Calico node needs whatever its conflist says.
CNI_PLUGINS = ("calico", "calico-ipam", "host-local", "portmap")
# The encapsulations each built-in routing plugin runs (Felix's managers; bird runs
# both beside BIRD, as calico-node does).
ENCAPS: dict[str, tuple[ModuleType, ...]] = {"bird": (vxlan, ipip), "vxlan": (vxlan,), "ipip": (ipip,)}


def _routing(view: NodeView) -> str:
    return view.config.routing.type


# --- calico-node ---------------------------------------------------------------------


def running(view: NodeView) -> list[str]:
    """calico-node answers ``-felix-live -felix-ready`` (and, in bird mode,
    ``-bird-live -bird-ready``) with success."""
    probes = [("felix", "-felix-live -felix-ready")]
    try:
        bird = _routing(view) == "bird"
    except Unavailable:
        bird = False  # an unreadable calico.toml is test_config_valid's to report
    if bird:
        probes.append(("bird", "-bird-live -bird-ready"))
    problems = []
    for name, flags in probes:
        out = view.output(name)
        if out.rc == 127:
            problems.append("calico-node is not on the node's PATH (see --calico-bin)")
        elif not out.ok:
            said = [line for line in out.out.splitlines() if line.strip()]
            problems += said or [out.failure(f"calico-node {flags}")]
    return problems


def config_valid(view: NodeView) -> list[str]:
    """``calico-node --check-config`` accepts the node's calico.toml."""
    out = view.output("check_config")
    if out.ok:
        return []
    if out.rc == 127:
        return ["calico-node is not on the node's PATH (see --calico-bin)"]
    return [line for line in out.err.splitlines() if line.strip()] or [out.failure("calico-node --check-config")]


# --- CNI -------------------------------------------------------------------------------


def cni(view: NodeView) -> list[str]:
    """The CNI executables are in place and the conflist holds a valid calico netconf."""
    settings = view.settings
    problems: list[str] = []
    found: dict[str, str] = {}
    for path in view.output("cni_bin").out.splitlines():
        found.setdefault(os.path.basename(path), path)
    needed = list(CNI_PLUGINS)
    conf = view.output("conflist")
    where = settings.conflist
    if not conf.ok:
        problems.append(conf.failure(f"reading {where}"))
    else:
        chain_problems, types = _conflist(where, conf.out, view.output("calico_config_refs").out)
        problems += chain_problems
        needed += types
    dirs = ":".join(settings.cni_bin_dirs)
    for name in dict.fromkeys(needed):
        if name not in found:
            problems.append(f"CNI plugin {name} is not an executable file in {dirs}")
    return problems


def _conflist(where: str, text: str, refs: str) -> tuple[list[str], list[str]]:
    """(problems, plugin types the chain runs) of Calico's conflist ``text``; ``refs``:
    ``ok|missing <path>`` per ``calico_config`` it names, as found on the node."""
    try:
        doc = netconf.loads(text)
    except CniError as exc:
        return [f"{where}: {exc}"], []
    chain = doc.get("plugins")
    if not isinstance(chain, list) or not chain or not all(isinstance(p, dict) for p in chain):
        return [f"{where}: plugins: must be a non-empty list of plugin objects"], []
    types = [p.get("type") for p in chain if isinstance(p.get("type"), str)]
    problems = []
    if types[:1] != ["calico"]:
        problems.append(f"{where}: the chain starts with {types[:1] or 'nothing'}, expected calico "
                        "(Calico's chain: calico, then portmap, then bandwidth)")
    for i, plugin in enumerate(chain):
        if plugin.get("type") != "calico":
            continue
        # libcni hands each plugin the list's name and version.
        conf = {**plugin, "name": doc.get("name"), "cniVersion": doc.get("cniVersion")}
        # A path on the node: the node checked it (refs), not this machine.
        conf.pop("calico_config", None)
        try:
            parsed = netconf.parse(conf, "calico")
        except CniError as exc:
            problems.append(f"{where}: plugins[{i}] (calico): {exc}")
            continue
        if parsed.ipam.type:
            types.append(parsed.ipam.type)
    for line in refs.splitlines():
        state, _, path = line.partition(" ")
        if state == "missing":
            problems.append(f"{where}: calico_config names {path}, which is not a file on the node")
    return problems, types


# --- BGP -------------------------------------------------------------------------------


@attrs.frozen
class Session:
    """One row of ``calicoctl node status``."""

    address: str
    type: str
    state: str
    since: str
    info: str


def node_status_sessions(text: str) -> dict[str, Session]:
    """The IPv4 rows of ``calicoctl node status`` by peer address (a wrapped INFO cell
    joined back into one line)."""
    section = text.split("IPv4 BGP status", 1)[1].split("IPv6 BGP status", 1)[0] if "IPv4 BGP status" in text else ""
    rows: list[list[str]] = []
    for line in section.splitlines():
        if not line.startswith("|"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 5 or cells[0] == "PEER ADDRESS":
            continue
        if cells[0] or not rows:
            rows.append(cells)
        else:
            rows[-1] = [old if not new else f"{old} {new}".strip() for old, new in zip(rows[-1], cells)]
    return {r[0]: Session(*r) for r in rows}


def bgp(view: NodeView) -> list[str]:
    """BGP sessions Established with exactly the peers confd's rules give this node."""
    routing = _routing(view)
    if routing != "bird":
        raise NotApplicable(f"routing is {routing!r}: BGP runs only with routing bird")
    # Passwords (read from files) do not change who the peers are.
    wanted = bird_model.build(view.state, os.devnull)
    expected = {p.ip: PEER_TYPES[bird_model.NAME_PREFIX[p.kind]] for p in wanted.peers}
    out = view.output("node_status")
    if "IPv4 BGP status" not in out.out:
        said = [line for line in out.out.splitlines() if line.strip() and "process is running" not in line]
        return [" ".join(said) if said else out.failure("calicoctl node status")]
    actual = node_status_sessions(out.out)
    problems = []
    for ip, kind in sorted(expected.items(), key=lambda kv: ipaddress.ip_address(kv[0])):
        row = actual.get(ip)
        if row is None:
            problems.append(f"BGP peer {ip} ({kind}) has no session in BIRD, expected Established")
        elif row.type != kind:
            problems.append(f"BGP peer {ip} is a {row.type} peer, expected {kind}")
        elif not row.info.startswith("Established"):
            word, _, why = (row.info or row.state).partition(" ")
            problems.append(f"BGP peer {ip} is {word}{f' ({why})' if why else ''}, expected Established")
    for ip in sorted(set(actual) - set(expected), key=ipaddress.ip_address):
        problems.append(f"BGP peer {ip} ({actual[ip].type}) is configured in BIRD, but the datastore asks for no such peer")
    return problems


# --- routes ----------------------------------------------------------------------------


@attrs.frozen
class Hop:
    """Where a route should send traffic for ``dst``: ``node``'s block or address."""

    dst: ipaddress.IPv4Network
    gateway: ipaddress.IPv4Address
    dev: str | None  # None: the main table has no route to the BGP next hop
    node: str
    how: str  # "VXLAN", "IPIP", "BGP", ...

    def text(self) -> str:
        return f"via {self.gateway} dev {self.dev}"


def expected_routes(view: NodeView) -> list[Hop]:
    """The route to each block (and borrowed address) of another node that this node
    should have: Felix's for encapsulating pools, BIRD's (learned over BGP, next hop
    resolved as ``gateway recursive`` does) for the other pools in bird mode."""
    routing = _routing(view)
    state = view.state
    me = routes.node_address(state.node)
    data = tunnel.data_device(view.netlink, me.ip) if me is not None else None
    hops: list[Hop] = []
    for module in ENCAPS.get(routing, ()):
        if not module.ENCAP.enabled(state):
            continue
        field = module.ENCAP.mode_field
        owners = {d.dst: d.node for d in routes.plan(state, field).remote}
        for r in routes.routes(state, field, module.tunnel_hop, data[1] if data else None):
            if r.kind == "unicast" and r.dst in owners:
                how = module.NAME.upper() if r.dev == module.DEVICE else "CrossSubnet, unencapsulated"
                hops.append(Hop(r.dst, r.gateway, r.dev, owners[r.dst], how))
    if routing == "bird":
        hops += _bgp_routes(view, state)
    return hops


def _bgp_routes(view: NodeView, state) -> list[Hop]:
    plain = [ipaddress.ip_network(p.cidr) for p in bird_model.build(state, os.devnull).pools
             if p.encapsulation is None and p.export]
    addresses = {n.name: routes.node_address(n) for n in state.of_kind("Node")}
    hops = []
    for block in state.of_kind("IPAMBlock"):
        host, net = block.host, block.network
        if host in (None, state.node_name) or net.version != 4 or addresses.get(host) is None:
            continue
        if any(net.subnet_of(pool) for pool in plain):
            hops.append(Hop(net, *_next_hop(view.routes, addresses[host].ip), host, "BGP"))
    return hops


def _next_hop(table: list[dict], address: ipaddress.IPv4Address) -> tuple[ipaddress.IPv4Address, str | None]:
    """(gateway, device) the main table reaches ``address`` by: the address itself on
    a connected subnet, else the gateway of the longest matching route."""
    best = None
    for r in table:
        dst = route_dst(r)
        if dst is None or address not in dst or r.get("type", "unicast") != "unicast" or "dev" not in r:
            continue
        if best is None or dst.prefixlen > best[0].prefixlen:
            best = (dst, r)
    if best is None:
        return address, None
    gateway = best[1].get("gateway")
    return (ipaddress.IPv4Address(gateway) if gateway else address), best[1]["dev"]


def remote_routes(view: NodeView) -> list[str]:
    """A route for every block of another node, via the next hop and device the
    routing mode gives it."""
    routing = _routing(view)
    if routing == "none":
        raise NotApplicable("routing is 'none' (Calico's policy-only mode): no routes to other nodes' blocks")
    if routing not in ENCAPS:
        raise NotApplicable(f"routing plugin {routing!r} is not one of pycalico's built-ins")
    if view.state.node is None:
        return [f"the datastore has no Node named {view.name}"]
    table: dict[ipaddress.IPv4Network, dict] = {}
    for r in sorted(view.routes, key=lambda r: r.get("metric", 0), reverse=True):
        dst = route_dst(r)
        if dst is not None:
            table[dst] = r  # the lowest metric wins, as in the kernel
    problems = []
    for hop in sorted(expected_routes(view), key=lambda h: h.dst):
        what = f"{hop.node}'s {'block' if hop.dst.prefixlen < 32 else 'workload'} {hop.dst}"
        if hop.dev is None:
            problems.append(f"no route to {hop.node}'s address {hop.gateway}, the BGP next hop of {what}")
            continue
        r = table.get(hop.dst)
        if r is None:
            problems.append(f"no route to {what}, expected {hop.text()} ({hop.how})")
            continue
        kind = r.get("type", "unicast")
        if kind != "unicast":
            problems.append(f"the route to {what} is a {kind} route, expected {hop.text()} ({hop.how})")
            continue
        nexthops = r.get("nexthops") or [r]
        if not any(h.get("gateway") == str(hop.gateway) and h.get("dev") == hop.dev for h in nexthops):
            actual = ", ".join(f"via {h.get('gateway', '(none)')} dev {h.get('dev')}" for h in nexthops)
            problems.append(f"the route to {what} goes {actual}, expected {hop.text()} ({hop.how})")
    return problems


# --- VXLAN -----------------------------------------------------------------------------


def vxlan_device(view: NodeView) -> list[str]:
    """``vxlan.calico`` as the Node and the settings say: VNI, port, local address,
    parent device, MAC, tunnel address, MTU, up."""
    routing = _routing(view)
    if vxlan not in ENCAPS.get(routing, ()):
        raise NotApplicable(f"routing is {routing!r}, which runs no VXLAN")
    state = view.state
    if not vxlan.ENCAP.enabled(state):
        raise NotApplicable("no IPv4 IP pool has vxlanMode Always or CrossSubnet (or FelixConfiguration vxlanEnabled is false)")
    if state.node is None:
        return [f"the datastore has no Node named {view.name}"]
    local = vtep_of(state.node)
    if local is None:
        return ["the Node has no spec.ipv4VXLANTunnelAddr (or no spec.bgp.ipv4Address): no VXLAN tunnel address yet"]
    ipr = view.netlink
    index = ipr.link_lookup(vxlan.DEVICE)
    if not index:
        return [f"{vxlan.DEVICE} does not exist"]
    options = view.options("routing") if routing == vxlan.NAME else None
    options = options if isinstance(options, vxlan.Options) else vxlan.Options()
    (link,) = ipr.get_links(index[0])
    info = link.get_attr("IFLA_LINKINFO_JSON")
    data = info.get("info_data") or {}
    parent = tunnel.data_device(ipr, local.host_ip)
    wanted = {
        "kind": ("vxlan", info.get("info_kind")),
        "VNI": (options.vni or felixconfig.setting(state, "vxlan_vni", vxlan.DEFAULTS["vxlan_vni"]), data.get("id")),
        "UDP port": (options.port or felixconfig.setting(state, "vxlan_port", vxlan.DEFAULTS["vxlan_port"]), data.get("port")),
        "local address": (str(local.host_ip), data.get("local")),
        "parent device": (parent[1] if parent else "(the device holding the node's address)", data.get("link")),
        "MAC": (local.mac, (link.get_attr("IFLA_ADDRESS") or "").lower()),
        "MTU": (tunnel.tunnel_mtu(state, ipr, options.mtu, "vxlan_mtu", vxlan.OVERHEAD), link.get_attr("IFLA_MTU")),
        "state": ("up", "up" if link["flags"] & 1 else "down"),
        "addresses": ([f"{local.tunnel_ip}/32"],
                      sorted(f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}" for a in ipr.get_addr(index=index[0]))),
    }
    return [f"{vxlan.DEVICE} {what} is {actual}, expected {want}" for what, (want, actual) in wanted.items() if want != actual]


# --- policy ----------------------------------------------------------------------------


def policy(view: NodeView) -> list[str]:
    """The policy dataplane calico.toml names is hooked in and its static filter
    chains hold Felix's rules: iptables' cali-INPUT/-FORWARD/-OUTPUT (and the other
    tables' hooks), or table inet calico's filter base chains."""
    kind = view.config.policy.type
    if kind not in ("iptables", "nftables"):
        raise NotApplicable(f"policy plugin {kind!r} is not one of pycalico's built-ins")
    options = view.options("policy")
    model = compile_policy(view.state)
    return _iptables(view, model, options) if kind == "iptables" else _nftables(view, model, options)


def iptables_backend(choice: str, version_text: str) -> str:
    """``nft`` or ``legacy`` as the plugin's ``backend`` picks it (``auto``: the mode
    the system's ``iptables --version`` names)."""
    if choice in ("nft", "legacy"):
        return choice
    return "legacy" if "legacy" in version_text else "nft"


def _iptables(view: NodeView, model, options) -> list[str]:
    backend = iptables_backend(options.backend, view.output("iptables_version").out)
    tables = ipt_kernel.parse_save(view.text(f"iptables_{backend}", f"iptables-{backend}-save"))
    cfg = render_config(model, options).static
    problems = []
    for table in ipt_static.HOOKS:
        state = tables.get(table)
        inserts, appends = ipt_static.hooks(cfg, table)
        for chain in (*inserts.values(), *appends.values()):
            have = {r.hash for r in state.kernel.get(chain.name, ())} if state else set()
            for rule, digest in zip(chain.rules, chain.hashes):
                if digest not in have:
                    problems.append(f"iptables {table} {chain.name} lacks Felix's rule '{rule.body}'")
    state = tables.get("filter")
    for chain in ipt_static.filter_chains(cfg, 4):
        have = state.chains.get(chain.name) if state else None
        if have is None:
            problems.append(f"iptables filter chain {chain.name} does not exist")
        elif tuple(have) != chain.hashes:
            problems.append(f"iptables filter chain {chain.name} {_rules_differ(have, chain.hashes)}")
    return problems


def _rules_differ(have, want) -> str:
    missing = sum(1 for h in want if h not in have)
    foreign = sum(1 for h in have if h not in want)
    if not missing and not foreign:
        return f"holds Felix's {len(want)} rules in another order"
    return f"has {len(have)} rules, expected Felix's {len(want)} ({missing} missing, {foreign} not Felix's)"


def _nftables(view: NodeView, model, options) -> list[str]:
    out = view.output("nft")
    where = f"table {nft_names.FAMILY} {nft_names.TABLE}"
    if not out.ok:
        return [f"{where} does not exist" if "No such file" in out.err else out.failure(f"nft list {where}")]
    try:
        state = parse_table(json.loads(out.out), nft_names.FAMILY, nft_names.TABLE)
    except ValueError as exc:
        raise Unavailable(f"nft -j list {where} did not print JSON: {exc}") from None
    problems = []
    for chain in nft_render.static_chains(nft_render.effective(model, options), {}):
        if chain.base is None or not chain.name.startswith("filter-"):
            continue
        have = state.chains.get(chain.name)
        if have is None:
            problems.append(f"{where} has no base chain {chain.name}")
        elif have.base != chain.base:
            problems.append(f"{where} chain {chain.name} hooks {have.base}, expected {chain.base}")
        elif have.comments != chain.comments:
            problems.append(f"{where} chain {chain.name} {_rules_differ(have.comments, chain.comments)}")
    return problems


# --- IPAM ------------------------------------------------------------------------------

_FOUND = re.compile(r"^Found ([1-9]\d*) (.*)$", re.M)
_TOTAL = re.compile(r"^Check complete; found (\d+) problems", re.M)


def ipam(view: NodeView) -> list[str]:
    """``calicoctl ipam check`` finds no problem."""
    out = view.output("ipam_check")
    total = _TOTAL.search(out.out)
    if total is None:
        return [out.failure("calicoctl ipam check")]
    if total[1] == "0":
        return []
    scans = out.out.split("Scanning for IPs that are allocated but not actually in use...", 1)[-1]
    counts = "; ".join(f"{n} {what.rstrip('.')}" for n, what in _FOUND.findall(scans))
    details = [line.strip() for line in scans.splitlines() if line.startswith("  ")]
    return [f"calicoctl ipam check found {total[1]} problem(s): {counts}", *details]
