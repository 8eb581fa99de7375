"""The whole desired iptables state of one IP version, rendered from a ``PolicyModel``.

:class:`Renderer` turns the compiled model into a :class:`Ruleset`: per table, the chains
we own and the rules we hook into the kernel chains, plus the IP sets the rules use.
Only chains something refers to are programmed (as Felix's table does): the endpoint
chains pull in their policy-group, policy and profile chains, table by table, so a
policy used only by a host endpoint's untracked tier lands in the raw table alone.

Rendering is incremental (:class:`Renderer`): a model that says what changed since the
one rendered last has only that re-rendered, and the result says what it touched.

Names are Felix's (tiered, v3 API): ``cali-pi-`` / ``cali-po-`` + ``<tier>/<name>``, the
name of a NetworkPolicy being ``<namespace>/<name>`` (``cali-pi-default/allow-web``);
``cali-pri-`` / ``cali-pro-`` + the profile name; hashed beyond 28 characters.
"""

from __future__ import annotations

import itertools
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping

import attrs

from pycalico.core.policy import EndpointPolicy, Policy, PolicyModel, Profile, ProtoPort, ResolvedEndpoint
from pycalico.core.policy.ids import ipset_name
from pycalico.core.policy.model import Changes
from pycalico.core.policy.tally import Contribution, Tally

from . import chains as c
from . import endpoints as e
from . import policy as p
from . import static as s
from .chains import Chain, Rule
from .options import Options, parse_proto_port

DIRECTIONS = ("ingress", "egress")
GROUP_DIRECTION = {"ingress": "inbound", "egress": "outbound"}
POLICY_PREFIX = {"ingress": c.POLICY_IN, "egress": c.POLICY_OUT}
PROFILE_PREFIX = {"ingress": c.PROFILE_IN, "egress": c.PROFILE_OUT}
MAX_SET_SIZE = 1048576  # Felix's MaxIPSetSize


@attrs.frozen(cache_hash=True)
class RenderConfig:
    """Everything besides the model that the rendered rules depend on."""

    marks: c.Marks
    deny: str
    deny_word: str
    endpoint_to_host: str
    failsafe_in: tuple[ProtoPort, ...]
    failsafe_out: tuple[ProtoPort, ...]
    log_prefix: str
    insert_mode: str
    prefixes: tuple[str, ...]
    vxlan_port: int
    allow_vxlan: bool
    allow_ipip: bool

    @property
    def static(self) -> s.StaticConfig:
        return s.StaticConfig(
            self.marks, self.prefixes, self.deny, self.endpoint_to_host, self.failsafe_in, self.failsafe_out,
            self.insert_mode,
        )


def _ports(texts: Iterable[str]) -> tuple[ProtoPort, ...]:
    return tuple(ProtoPort(*parse_proto_port(t)) for t in texts)


def render_config(model: PolicyModel, options: Options) -> RenderConfig:
    """Options over FelixConfiguration (``model.settings``) over Felix's defaults."""
    st = model.settings
    deny = (options.deny_action or st.iptables_filter_deny_action or "Drop").upper()
    deny = "REJECT" if deny == "REJECT" else "DROP"
    to_host = (options.endpoint_to_host_action or st.default_endpoint_to_host_action or "Drop").upper()
    if to_host not in ("ACCEPT", "DROP", "REJECT"):
        to_host = "RETURN"
    failsafe_in = model.failsafe.inbound if options.failsafe_inbound is None else _ports(options.failsafe_inbound)
    failsafe_out = model.failsafe.outbound if options.failsafe_outbound is None else _ports(options.failsafe_outbound)
    prefixes = tuple(x.strip() for x in (st.interface_prefix or "cali").split(",") if x.strip())
    return RenderConfig(
        marks=c.Marks.from_mask(options.mark_mask),
        deny=c.verdict(deny),
        deny_word=deny.capitalize(),
        endpoint_to_host=c.verdict(to_host),
        failsafe_in=tuple(failsafe_in),
        failsafe_out=tuple(failsafe_out),
        log_prefix=(options.log_prefix or st.log_prefix or "calico-packet")[:27],
        insert_mode=options.chain_insert_mode,
        prefixes=prefixes or ("cali",),
        vxlan_port=st.vxlan_port,
        allow_vxlan=st.allow_vxlan_packets_from_workloads,
        allow_ipip=st.allow_ipip_packets_from_workloads,
    )


# --- names ---------------------------------------------------------------------------


def felix_name(policy: Policy) -> str:
    """The policy's name as Felix's PolicyID has it: ``[<namespace>/]<name>``."""
    return f"{policy.namespace}/{policy.name}" if policy.namespace else policy.name


def policy_suffix(policy: Policy) -> str:
    """What follows ``cali-pi-`` / ``cali-po-``: ``<tier>/<name>``."""
    return f"{policy.tier}/{felix_name(policy)}"


def policy_chain_name(policy: Policy, direction: str) -> str:
    return c.chain_name(POLICY_PREFIX[direction], policy_suffix(policy))


def profile_chain_name(name: str, direction: str) -> str:
    return c.chain_name(PROFILE_PREFIX[direction], name)


_SPECIFIER = re.compile(r"%[tknp]")
_KIND = {"GlobalNetworkPolicy": "gnp", "NetworkPolicy": "np"}


def log_prefix(template: str, policy: Policy | None = None, profile: str | None = None) -> str:
    """The LOG prefix, with Felix's ``%t`` ``%k`` ``%n`` ``%p`` filled in; 27 characters at most."""
    if "%" not in template:
        return template[:27]
    if policy is not None:
        values = {
            "%t": policy.tier,
            "%k": "knp" if policy.name.startswith("knp.") else _KIND.get(policy.kind, "unknown"),
            "%n": policy.name,
            "%p": f"{policy.namespace}/{policy.name}" if policy.namespace else policy.name,
        }
    else:
        values = {"%t": "", "%k": "pro", "%n": profile or "", "%p": profile or ""}
    return _SPECIFIER.sub(lambda m: values[m.group(0)], template).replace('"', "_")[:27]


# --- the result ----------------------------------------------------------------------


@attrs.frozen
class DesiredSet:
    name: str
    set_type: str  # hash:net | hash:ip,port
    family: str  # inet | inet6
    members: frozenset[str]
    maxelem: int = MAX_SET_SIZE


@attrs.define
class TableSpec:
    """One table: the chains we own, and our rules at the top / end of kernel chains."""

    chains: dict[str, Chain]
    inserts: dict[str, Chain]
    appends: dict[str, Chain]


@attrs.frozen
class Touched:
    """What of a :class:`Ruleset` may differ from the same renderer's ruleset ``since``."""

    since: int
    chains: Mapping[str, frozenset[str]]  # table -> chain names
    sets: frozenset[str]


@attrs.define
class Ruleset:
    """One IP version's tables and IP sets; ``touched`` None: anything may have changed."""

    version: int
    tables: dict[str, TableSpec]
    ipsets: dict[str, DesiredSet]
    serial: int = 0
    touched: Touched | None = None


def canonical_member(member: str, version: int) -> str:
    """A set member as ``ipset save`` prints it: host routes without their prefix length."""
    if "," in member:
        return member
    suffix = "/32" if version == 4 else "/128"
    return member[: -len(suffix)] if member.endswith(suffix) else member


# --- rendering -----------------------------------------------------------------------


@attrs.frozen
class _Needs:
    """What a rendered endpoint chain refers to: policy groups, policies, profiles."""

    groups: tuple[tuple[e.PolicyGroup, tuple[tuple[str, str], ...]], ...] = ()  # (group, its (key, direction)s)
    policies: tuple[tuple[str, str], ...] = ()  # (policy key, direction) jumped to directly
    profiles: tuple[tuple[str, str], ...] = ()  # (profile name, direction)


_SERIALS = itertools.count(1)
HEP_KINDS = ("normal", "untracked", "pre-dnat", "mangle")

# What an endpoint chain jumps to: ("pol", table, key, direction), ("pro", table, name,
# direction) or ("grp", table, PolicyGroup).
Ref = tuple


class Renderer:
    """Model -> :class:`Ruleset` per IP version, pass after pass.

    Keeps the last rulesets and where each part came from: every endpoint's chains and
    dispatch membership, and the policy, profile and group chains endpoint chains jump to,
    made (per table) while any endpoint needs them (a
    :class:`~pycalico.core.policy.tally.Tally`); the IP sets those chains use, counted; the
    static, dispatch and NAT chains. A model whose ``changes`` are against the model
    rendered last (with the same settings and IP versions) redoes only the endpoints,
    policies, profiles and sets they list; any other model is rendered whole, by the same
    steps over everything.
    """

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._model_serial: int | None = None
        self._cfg: RenderConfig | None = None
        self._versions: tuple[int, ...] = ()
        self._endpoints = Tally(lambda ref: (ref[0], ref[2]) if ref[0] != "grp" else None)
        self._wl_ifaces: set[str] = set()
        self._hep_ifaces: dict[str, set[str]] = {k: set() for k in HEP_KINDS}
        self._out: dict[int, dict[str, dict[str, Chain]]] = {}  # version -> table -> chains
        self._made: dict[int, dict[Ref, tuple[str, frozenset[str]]]] = {}  # version -> target -> (chain, set ids)
        self._nat_sets: dict[int, frozenset[str]] = {}
        self._set_counts: dict[int, Counter[str]] = {}
        self._ipsets: dict[int, dict[str, DesiredSet]] = {}
        self._static: dict[tuple[int, str], tuple[object, tuple[str, ...]]] = {}  # (version, part) -> (key, names)
        self._hooks: dict[str, tuple[dict[str, Chain], dict[str, Chain]]] = {}
        self._serials: dict[int, int] = {}

    def render(self, model: PolicyModel, cfg: RenderConfig, versions: tuple[int, ...]) -> dict[int, Ruleset]:
        try:
            return self._render(model, cfg, versions)
        except BaseException:
            self._reset()
            raise

    def _render(self, model: PolicyModel, cfg: RenderConfig, versions: tuple[int, ...]) -> dict[int, Ruleset]:
        changes = model.changes_since(self._model_serial)
        if changes is None or cfg != self._cfg or versions != self._versions:
            self._reset()
            changes = None
            self._cfg, self._versions = cfg, versions
            self._hooks = {t: s.hooks(cfg.static, t) for t in c.TABLES}
            for v in versions:
                self._out[v] = {t: {} for t in c.TABLES}
                self._made[v], self._set_counts[v], self._ipsets[v], self._nat_sets[v] = {}, Counter(), {}, frozenset()
        cfg = self._cfg
        touched = {v: {t: set() for t in c.TABLES} for v in versions}
        touched_sets: dict[int, set[str]] = {v: set() for v in versions}
        counted: dict[int, set[str]] = {v: set() for v in versions}  # set ids whose use count moved

        self._update_endpoints(model, cfg, changes, touched)
        for ref in self._endpoints.redo(changes):
            self._update_target(ref, model, cfg, touched, counted)
        if changes is None or changes.rest:
            for v in versions:
                self._update_static(v, model, cfg, touched[v], counted[v])

        out = {}
        for v in versions:
            fresh = counted[v] | (model.ip_sets.keys() if changes is None else changes.ip_sets)
            self._update_sets(v, model, fresh, touched_sets[v])
            previous = self._serials.get(v, 0)
            self._serials[v] = next(_SERIALS)
            tables = {
                t: TableSpec(dict(self._out[v][t]), *self._hooks[t])
                for t in c.TABLES
            }
            mark = None
            if changes is not None:
                mark = Touched(previous, {t: frozenset(n) for t, n in touched[v].items()}, frozenset(touched_sets[v]))
            out[v] = Ruleset(v, tables, dict(self._ipsets[v]), self._serials[v], mark)
        self._model_serial = model.serial
        return out

    # --- chains of every version --------------------------------------------------------

    def _put(self, version: int, table: str, name: str, chain: Chain | None, touched: dict) -> None:
        chains = self._out[version][table]
        old = chains.get(name)
        if chain is None:
            if old is not None:
                del chains[name]
                touched[version][table].add(name)
        elif old is None or old.hashes != chain.hashes:
            chains[name] = chain
            touched[version][table].add(name)

    def _put_all(self, table: str, name: str, chain: Chain | None, touched: dict) -> None:
        for v in self._versions:
            self._put(v, table, name, chain, touched)

    def _update_endpoints(self, model: PolicyModel, cfg: RenderConfig, changes: Changes | None, touched: dict) -> None:
        """Bring the endpoints' chains and the dispatch chains up to date."""
        for key in model.endpoints if changes is None else changes.endpoints:
            resolved = model.endpoints.get(key)
            self._endpoints.put(key, self._endpoint_part(model, cfg, resolved) if resolved is not None else None)
        dispatch = changes is None
        slots = self._endpoints.take_moved()
        for slot in slots:
            value = self._endpoints.value(slot)
            if slot[0] == "chain":
                self._put_all(slot[1], slot[2], value, touched)
                continue
            dispatch = True
            members = self._wl_ifaces if slot[0] == "wl" else self._hep_ifaces[slot[1]]
            if value is None:
                members.discard(slot[-1])
            else:
                members.add(slot[-1])
        if dispatch:
            self._update_dispatch(cfg, touched)

    def _update_dispatch(self, cfg: RenderConfig, touched: dict) -> None:
        wl, pf, hep = sorted(self._wl_ifaces), cfg.prefixes, {k: sorted(v) for k, v in self._hep_ifaces.items()}
        parts = {
            "wl": ("filter", _wl_dispatch(wl, (Rule((), cfg.deny, ("Unknown interface",)),))),
            "hep-filter": ("filter", _hep_dispatch(hep["normal"], pf, "both", forward=True)),
            "hep-raw": ("raw", _hep_dispatch(hep["untracked"], pf, "both", forward=False)),
            "hep-mangle-from": ("mangle", _hep_dispatch(hep["pre-dnat"], pf, "from", forward=False)),
            "hep-mangle-to": ("mangle", _hep_dispatch(hep["mangle"], pf, "to", forward=False)),
        }
        for part, (table, chains) in parts.items():
            self._replace_part(None, part, table, chains, touched)

    def _replace_part(
        self, version: int | None, part: str, table: str, chains: list[Chain], touched: dict, key: object = None
    ) -> None:
        """Put a group of chains that replaces the group made under ``part`` (made for
        ``key``, what it depends on) last time, in one version or all."""
        names = tuple(ch.name for ch in chains)
        for v in self._versions if version is None else (version,):
            _, old = self._static.get((v, part), (None, ()))
            for name in set(old).difference(names):
                self._put(v, table, name, None, touched)
            for chain in chains:
                self._put(v, table, chain.name, chain, touched)
            self._static[(v, part)] = (key, names)

    def _endpoint_part(self, model: PolicyModel, cfg: RenderConfig, resolved: ResolvedEndpoint) -> Contribution:
        """An endpoint's chains (slots ``("chain", table, name)``) and dispatch membership
        (``("wl", iface)``, ``("hep", kind, iface)``); refs: what its chains jump to."""
        ep = resolved.endpoint
        iface = ep.interface
        if not iface:
            return Contribution()
        if ep.is_workload:
            made = [("filter", None, chain) for chain in self._wep_chains(model, cfg, resolved)]
            slots = [(("wl", iface), True)]
        else:
            iface = c.ALL_INTERFACES if iface == "*" else iface
            made = self._hep_chains(model, cfg, iface, resolved)
            slots = [(("hep", kind, iface), True) for kind in dict.fromkeys(kind for _, kind, _ in made)]
        refs: set[Ref] = set()
        for table, _, (chain, needs) in made:
            slots.append((("chain", table, chain.name), chain))
            for group, items in needs.groups:
                refs.add(("grp", table, group))
                refs.update(("pol", table, key, direction) for key, direction in items)
            refs.update(("pol", table, key, direction) for key, direction in needs.policies)
            refs.update(("pro", table, name, direction) for name, direction in needs.profiles)
        return Contribution(tuple(slots), frozenset(refs))

    def _update_target(self, ref: Ref, model: PolicyModel, cfg: RenderConfig, touched: dict, counted: dict) -> None:
        """Make, remake or remove one jump target in every version."""
        wanted = self._endpoints.wanted(ref)
        if ref[0] == "grp":
            group = ref[2]
            self._put_all(ref[1], group.chain_name, _group_chain(group, cfg) if wanted else None, touched)
            return
        kind, table, key, direction = ref
        source = model.policies if kind == "pol" else model.profiles
        for v in self._versions:
            counts = self._set_counts[v]
            name, used = self._made[v].pop(ref, (None, ()))
            for set_id in used:
                counts[set_id] -= 1
                counted[v].add(set_id)
            if not wanted:
                if name is not None:
                    self._put(v, table, name, None, touched)
                continue
            chain, used = _rules_chain(model, source[key], direction, v, cfg, table)
            self._made[v][ref] = (chain.name, used)
            if name is not None and name != chain.name:  # the policy moved to another tier
                self._put(v, table, name, None, touched)
            for set_id in used:
                counts[set_id] += 1
                counted[v].add(set_id)
            self._put(v, table, chain.name, chain, touched)

    def _update_static(self, version: int, model: PolicyModel, cfg: RenderConfig, touched: dict, counted: set[str]) -> None:
        """The static chains of one version, made again when what they depend on moved."""
        static = cfg.static
        # Only the prefixes workloads may spoof change the raw chains.
        spoof = tuple(a for a in model.anti_spoofing if a.allowed_prefixes)
        masq = model.nat.masq_pools
        masq_name = masq.name(version) if masq.members(version) else None
        all_pools = model.nat.all_pools.name(version)
        parts = {
            "static-filter": ("filter", None, lambda: s.filter_chains(static, version)),
            "static-raw": ("raw", tuple((a.interface, a.allowed_prefixes) for a in spoof),
                           lambda: s.raw_chains(static, version, spoof)),
            "static-mangle": ("mangle", None, lambda: s.mangle_chains(static, version)),
            "static-nat": ("nat", (masq_name, all_pools), lambda: s.nat_chains(masq_name, all_pools)),
        }
        for part, (table, key, make) in parts.items():
            if (version, part) not in self._static or self._static[(version, part)][0] != key:
                self._replace_part(version, part, table, make(), {version: touched}, key)
        nat_sets = frozenset({model.nat.all_pools.id, model.nat.masq_pools.id} if masq_name else ())
        counts = self._set_counts[version]
        for set_id in nat_sets ^ self._nat_sets[version]:
            counts[set_id] += 1 if set_id in nat_sets else -1
            counted.add(set_id)
        self._nat_sets[version] = nat_sets

    def _update_sets(self, version: int, model: PolicyModel, set_ids, touched: set[str]) -> None:
        """The IP sets of one version whose use or members may have moved."""
        counts, ipsets = self._set_counts[version], self._ipsets[version]
        family = "inet" if version == 4 else "inet6"
        for set_id in set_ids:
            name = ipset_name(set_id, version)
            if counts[set_id] <= 0:
                del counts[set_id]
                if ipsets.pop(name, None) is not None:
                    touched.add(name)
                continue
            ipset = model.ip_sets.get(set_id)
            if ipset is None:  # a set the model does not know: keep it empty
                want = DesiredSet(name, "hash:net", family, frozenset())
            else:
                members = frozenset(canonical_member(m, version) for m in ipset.members(version))
                want = DesiredSet(name, ipset.spec.set_type, family, members)
            if ipsets.get(name) != want:
                ipsets[name] = want
                touched.add(name)

    # --- endpoint chains ---------------------------------------------------------------

    def _tiers(self, model: PolicyModel, chain: EndpointPolicy, direction: str) -> tuple[tuple[e.Tier, ...], _Needs]:
        tiers, groups, policies = [], [], []
        for tier in chain.tiers:
            entries = [(felix_name(model.policies[k]), model.policies[k].selector) for k in tier.policies]
            key_of = {entry[0]: k for entry, k in zip(entries, tier.policies, strict=True)}
            targets = []
            for name, group in e.group_policies(tier.name, GROUP_DIRECTION[direction], entries):
                if group is None:
                    targets.append(c.chain_name(POLICY_PREFIX[direction], f"{tier.name}/{name}"))
                    policies.append((key_of[name], direction))
                else:
                    targets.append(group.chain_name)
                    groups.append((group, tuple((key_of[n], direction) for n in group.names)))
            tiers.append(e.Tier(tier.name, tier.default_action != "Pass", tuple(targets)))
        return tuple(tiers), _Needs(tuple(groups), tuple(policies))

    def _endpoint_chain(
        self,
        model: PolicyModel,
        cfg: RenderConfig,
        name: str,
        chain: EndpointPolicy,
        direction: str,
        *,
        kind: str,
        failsafe: str | None,
        allow: str,
        drop_encap: bool = False,
        table: str = "filter",
    ) -> tuple[Chain, _Needs]:
        tiers, needs = self._tiers(model, chain, direction)
        profiles = chain.profiles if kind == "normal" else ()
        spec = e.EndpointChainSpec(
            name=name,
            tiers=tiers,
            profiles=tuple(profile_chain_name(pr, direction) for pr in profiles),
            kind=kind,
            failsafe=failsafe,
            allow=allow,
            deny=_deny(cfg, table),
            drop_vxlan_port=cfg.vxlan_port if drop_encap and not cfg.allow_vxlan else None,
            drop_ipip=drop_encap and not cfg.allow_ipip,
        )
        needs = attrs.evolve(needs, profiles=tuple((pr, direction) for pr in profiles))
        word = cfg.deny_word if table == "filter" else "Drop"
        return e.endpoint_chain(spec, cfg.marks, word), needs

    def _wep_chains(self, model: PolicyModel, cfg: RenderConfig, resolved: ResolvedEndpoint):
        iface = resolved.endpoint.interface
        ep = self._endpoint_chain
        return [
            ep(model, cfg, c.chain_name(c.WORKLOAD_TO, iface), resolved.ingress, "ingress",
               kind="normal", failsafe=None, allow=c.ACCEPT),
            ep(model, cfg, c.chain_name(c.WORKLOAD_FROM, iface), resolved.egress, "egress",
               kind="normal", failsafe=None, allow=c.ACCEPT, drop_encap=True),
        ]

    def _hep_chains(self, model: PolicyModel, cfg: RenderConfig, iface: str, resolved: ResolvedEndpoint):
        """(table, dispatch kind, (chain, needs)) for each chain of a host endpoint."""
        ep = self._endpoint_chain
        name = c.chain_name
        out = [
            ("filter", "normal", ep(model, cfg, name(c.HOST_TO, iface), resolved.egress, "egress",
                                    kind="normal", failsafe=c.FAILSAFE_OUT, allow=c.ACCEPT)),
            ("filter", "normal", ep(model, cfg, name(c.HOST_FROM, iface), resolved.ingress, "ingress",
                                    kind="normal", failsafe=c.FAILSAFE_IN, allow=c.ACCEPT)),
            ("filter", "normal", ep(model, cfg, name(c.HOST_TO_FORWARD, iface), resolved.forward_egress, "egress",
                                    kind="forward", failsafe=None, allow=c.ACCEPT)),
            ("filter", "normal", ep(model, cfg, name(c.HOST_FROM_FORWARD, iface), resolved.forward_ingress,
                                    "ingress", kind="forward", failsafe=None, allow=c.ACCEPT)),
        ]
        untracked_in, untracked_out = resolved.untracked_ingress, resolved.untracked_egress
        if untracked_in.tiers or untracked_out.tiers:
            out += [
                ("raw", "untracked", ep(model, cfg, name(c.HOST_TO, iface), untracked_out, "egress",
                                       kind="untracked", failsafe=c.FAILSAFE_OUT, allow=c.ACCEPT, table="raw")),
                ("raw", "untracked", ep(model, cfg, name(c.HOST_FROM, iface), untracked_in, "ingress",
                                       kind="untracked", failsafe=c.FAILSAFE_IN, allow=c.ACCEPT, table="raw")),
            ]
        if resolved.pre_dnat_ingress.tiers:
            out.append(("mangle", "pre-dnat", ep(model, cfg, name(c.HOST_FROM, iface), resolved.pre_dnat_ingress,
                                                 "ingress", kind="pre-dnat", failsafe=c.FAILSAFE_IN, allow=c.ACCEPT,
                                                 table="mangle")))
        out.append(("mangle", "mangle", ep(model, cfg, name(c.HOST_TO, iface), resolved.egress, "egress",
                                           kind="normal", failsafe=c.FAILSAFE_OUT, allow=c.RETURN, table="mangle")))
        return out


def _group_chain(group: e.PolicyGroup, cfg: RenderConfig) -> Chain:
    prefix = c.POLICY_IN if group.direction == "inbound" else c.POLICY_OUT
    return group.chain(cfg.marks, lambda n: c.chain_name(prefix, f"{group.tier}/{n}"))


def _deny(cfg: RenderConfig, table: str) -> str:
    """REJECT is only valid in the filter table: raw and mangle chains always DROP."""
    return cfg.deny if table == "filter" else c.DROP


def _rule_context(
    model: PolicyModel, version: int, cfg: RenderConfig, used: set[str], table: str = "filter"
) -> p.RuleContext:
    def set_name(set_id: str) -> tuple[str, bool]:
        used.add(set_id)
        ipset = model.ip_sets.get(set_id)
        spec_type = ipset.spec.set_type if ipset is not None else "hash:net"
        return ipset_name(set_id, version), spec_type == "hash:ip,port"

    return p.RuleContext(version, cfg.marks, _deny(cfg, table), set_name)


def _rules_chain(
    model: PolicyModel, owner: Policy | Profile, direction: str, version: int, cfg: RenderConfig, table: str = "filter"
) -> tuple[Chain, frozenset[str]]:
    """The chain of one policy's or profile's rules in one direction, and the ids of the sets it uses."""
    used: set[str] = set()
    ctx = _rule_context(model, version, cfg, used, table)
    if isinstance(owner, Policy):
        name, what, prefix = policy_chain_name(owner, direction), f"Policy {policy_suffix(owner)}", log_prefix(cfg.log_prefix, policy=owner)
    else:
        name, what, prefix = profile_chain_name(owner.name, direction), f"Profile {owner.name}", log_prefix(cfg.log_prefix, profile=owner.name)
    rules = p.render_rules(owner.rules(direction), ctx, prefix, f"{what} {direction}")
    return Chain(name, rules), frozenset(used)


def _wl_dispatch(ifaces: list[str], unknown: tuple[Rule, ...]) -> list[Chain]:
    def to_from(n: str) -> str:
        return c.goto(c.chain_name(c.WORKLOAD_FROM, n))

    def to_to(n: str) -> str:
        return c.goto(c.chain_name(c.WORKLOAD_TO, n))

    return e.dispatch_chains(c.FROM_WL_DISPATCH, ifaces, e.in_iface, to_from, unknown) + e.dispatch_chains(
        c.TO_WL_DISPATCH, ifaces, e.out_iface, to_to, unknown
    )


def _hep_dispatch(ifaces: list[str], prefixes: tuple[str, ...], directions: str, forward: bool) -> list[Chain]:
    """Felix's ``hostDispatchChains``; a ``*`` host endpoint is the default for other interfaces."""
    names = [i for i in ifaces if i != c.ALL_INTERFACES]
    default = c.ALL_INTERFACES in ifaces
    out: list[Chain] = []

    def build(root: str, pfx: str, match: Callable[[str], str], end: list[Rule]) -> None:
        out.extend(e.dispatch_chains(root, names, match, lambda n: c.goto(c.chain_name(pfx, n)), end))

    from_end: list[Rule] = []
    to_end: list[Rule] = []
    from_fwd_end: list[Rule] = []
    to_fwd_end: list[Rule] = []
    if default:
        from_end = [Rule((), c.goto(c.chain_name(c.HOST_FROM, c.ALL_INTERFACES)))]
        from_fwd_end = [Rule((), c.goto(c.chain_name(c.HOST_FROM_FORWARD, c.ALL_INTERFACES)))]
        to_end = [
            Rule((e.out_iface(x + "+"),), c.RETURN, ("Skip egress WHEP policy for traffic to local workload",))
            for x in prefixes
        ]
        to_end.append(Rule((), c.goto(c.chain_name(c.HOST_TO, c.ALL_INTERFACES))))
        to_fwd_end = [Rule((), c.goto(c.chain_name(c.HOST_TO_FORWARD, c.ALL_INTERFACES)))]
    if directions in ("both", "from"):
        build(c.FROM_HOST_DISPATCH, c.HOST_FROM, e.in_iface, from_end)
    if directions in ("both", "to"):
        build(c.TO_HOST_DISPATCH, c.HOST_TO, e.out_iface, to_end)
    if forward:
        build(c.FROM_HEP_FORWARD_DISPATCH, c.HOST_FROM_FORWARD, e.in_iface, from_fwd_end)
        build(c.TO_HEP_FORWARD_DISPATCH, c.HOST_TO_FORWARD, e.out_iface, to_fwd_end)
    return out
