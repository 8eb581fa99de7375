"""The whole desired iptables state of one IP version, rendered from a ``PolicyModel``.

:class:`Renderer` turns the compiled model into a :class:`Ruleset`: per table, the chains
we own and the rules we hook into the kernel chains, plus the IP sets the rules use.
Only chains something refers to are programmed (as Felix's table does): the endpoint
chains pull in their policy-group, policy and profile chains, table by table, so a
policy used only by a host endpoint's untracked tier lands in the raw table alone.

Rendering is cached across passes: a policy's chains by its content id, an endpoint's
chains by its chain ids and the names and selectors of its policies; a pass re-renders
only what changed and drops what it did not use.

Names are Felix's (tiered, v3 API): ``cali-pi-`` / ``cali-po-`` + ``<tier>/<name>``, the
name of a NetworkPolicy being ``<namespace>/<name>`` (``cali-pi-default/allow-web``);
``cali-pri-`` / ``cali-pro-`` + the profile name; hashed beyond 28 characters.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

import attrs

from pycalico.core.policy import EndpointPolicy, Policy, PolicyModel, Profile, ProtoPort, ResolvedEndpoint
from pycalico.core.policy.ids import ipset_name

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


@attrs.define
class Ruleset:
    version: int
    tables: dict[str, TableSpec]
    ipsets: dict[str, DesiredSet]


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


@attrs.define
class _Structure:
    chains: dict[str, dict[str, Chain]] = attrs.Factory(lambda: {t: {} for t in c.TABLES})
    policies: dict[str, set[tuple[str, str]]] = attrs.Factory(lambda: {t: set() for t in c.TABLES})
    profiles: dict[str, set[tuple[str, str]]] = attrs.Factory(lambda: {t: set() for t in c.TABLES})


class Renderer:
    """Model -> :class:`Ruleset`, with a cache that keeps what the last pass used."""

    def __init__(self) -> None:
        self._old: dict[Any, Any] = {}
        self._new: dict[Any, Any] = {}
        # version -> set id -> (the model's members, the desired set), kept across passes
        self._sets_old: dict[int, dict[str, tuple[tuple[str, ...], DesiredSet]]] = {}
        self._sets_new: dict[int, dict[str, tuple[tuple[str, ...], DesiredSet]]] = {}
        # (version, table, "policy" | "profile") -> (config, {(key, direction): (content id,
        # chain, set ids)}, all those set ids)
        self._rendered_old: dict[tuple, tuple] = {}
        self._rendered_new: dict[tuple, tuple] = {}
        self._last_ids: tuple[dict, dict] = ({}, {})
        self._next_ids: tuple[dict, dict] = ({}, {})
        self._changed_of: PolicyModel | None = None
        self._changed: dict[str, frozenset[str]] = {}
        self._model: PolicyModel | None = None
        self._names: dict[str, tuple[str, str]] = {}
        self._chain_tokens: dict[str, int] = {}
        self._tokens: dict[tuple, int] = {}
        self._structure_of: tuple[PolicyModel, RenderConfig] | None = None
        self._structure_memo: _Structure | None = None

    def _cached(self, key: Any, make: Callable[[], Any]) -> Any:
        value = self._new.get(key)
        if value is None:
            value = self._old.get(key)
            if value is None:
                value = make()
            self._new[key] = value
        return value

    def end_pass(self) -> None:
        """Forget what this pass did not use."""
        self._old, self._new = self._new, {}
        self._sets_old, self._sets_new = self._sets_new, {}
        self._rendered_old, self._rendered_new = self._rendered_new, {}
        if self._changed_of is not None:
            self._last_ids = self._next_ids
        self._changed_of = None
        self._model = None
        self._structure_of = None
        self._structure_memo = None
        if len(self._tokens) > 100000:
            self._tokens.clear()

    def _policy_names(self, model: PolicyModel) -> dict[str, tuple[str, str]]:
        """Policy key -> (Felix name, selector), once per model."""
        if self._model is not model:
            self._model = model
            self._names = {k: (felix_name(pol), pol.selector) for k, pol in model.policies.items()}
            self._chain_tokens = {}
        return self._names

    def _changed_ids(self, model: PolicyModel) -> dict[str, frozenset[str]]:
        """Keys of the policies and profiles whose content id is not last pass's; once per model."""
        if self._changed_of is not model:
            policy_ids = {k: pol.id for k, pol in model.policies.items()}
            profile_ids = {k: pro.id for k, pro in model.profiles.items()}
            last_policies, last_profiles = self._last_ids
            self._changed = {
                "policy": frozenset(k for k, v in policy_ids.items() if last_policies.get(k) != v),
                "profile": frozenset(k for k, v in profile_ids.items() if last_profiles.get(k) != v),
            }
            self._next_ids = (policy_ids, profile_ids)
            self._changed_of = model
        return self._changed

    def _chain_token(self, model: PolicyModel, chain: EndpointPolicy) -> int:
        """A small number for the names and selectors of a chain's policies (what its
        rendering depends on besides the chain's own id), the same across passes."""
        names = self._policy_names(model)
        token = self._chain_tokens.get(chain.id)
        if token is None:
            entries = tuple(names[k] for tier in chain.tiers for k in tier.policies)
            token = self._tokens.get(entries)
            if token is None:
                token = self._tokens[entries] = len(self._tokens)
            self._chain_tokens[chain.id] = token
        return token

    def _structure(self, model: PolicyModel, cfg: RenderConfig) -> _Structure:
        """The endpoint, group and dispatch chains (the same in both IP versions) and the
        policies and profiles they refer to, per table; once per model."""
        if self._structure_of is not None and self._structure_of[0] is model and self._structure_of[1] is cfg:
            return self._structure_memo
        by_table: dict[str, list[tuple[Chain, _Needs]]] = {"filter": [], "raw": [], "mangle": []}
        wep_ifaces: list[str] = []
        seen: set[str] = set()
        for resolved in model.endpoints.values():
            ep = resolved.endpoint
            iface = ep.interface
            if not ep.is_workload or not iface or iface in seen:
                continue
            seen.add(iface)
            wep_ifaces.append(iface)
            by_table["filter"] += self._wep_chains(model, cfg, resolved)
        hep_ifaces: dict[str, list[str]] = {"normal": [], "untracked": [], "pre-dnat": [], "mangle": []}
        for iface, resolved in _unique_heps(model).items():
            for table, kind, chain_needs in self._hep_chains(model, cfg, iface, resolved):
                by_table[table].append(chain_needs)
                if iface not in hep_ifaces[kind]:
                    hep_ifaces[kind].append(iface)

        out = _Structure()
        chains = out.chains

        def add(table: str, items: Iterable[Chain]) -> None:
            for chain in items:
                chains[table][chain.name] = chain

        unknown = (Rule((), cfg.deny, ("Unknown interface",)),)
        wl_key = ("wl-dispatch", tuple(sorted(wep_ifaces)), cfg.deny)
        add("filter", self._cached(wl_key, lambda: _wl_dispatch(wep_ifaces, unknown)))
        pf = cfg.prefixes
        normal, untracked = hep_ifaces["normal"], hep_ifaces["untracked"]
        pre_dnat, mangle = hep_ifaces["pre-dnat"], hep_ifaces["mangle"]
        add("filter", self._cached(("hep-filter", tuple(sorted(normal)), pf),
                                   lambda: _hep_dispatch(normal, pf, "both", forward=True)))
        add("raw", self._cached(("hep-raw", tuple(sorted(untracked)), pf),
                                lambda: _hep_dispatch(untracked, pf, "both", forward=False)))
        add("mangle", self._cached(("hep-mangle-from", tuple(sorted(pre_dnat)), pf),
                                   lambda: _hep_dispatch(pre_dnat, pf, "from", forward=False)))
        add("mangle", self._cached(("hep-mangle-to", tuple(sorted(mangle)), pf),
                                   lambda: _hep_dispatch(mangle, pf, "to", forward=False)))

        for table, items in by_table.items():
            groups: dict[str, tuple[e.PolicyGroup, tuple[tuple[str, str], ...]]] = {}
            policies = out.policies[table]
            profiles = out.profiles[table]
            target = chains[table]
            for chain, needs in items:
                target[chain.name] = chain
                for group in needs.groups:
                    groups[group[0].chain_name] = group
                if needs.policies:
                    policies.update(needs.policies)
                if needs.profiles:
                    profiles.update(needs.profiles)
            for name, (group, items) in groups.items():
                target[name] = self._cached(("group", group, cfg.marks), lambda g=group: _group_chain(g, cfg))
                policies.update(items)
        self._structure_of = (model, cfg)
        self._structure_memo = out
        return out

    def render(self, model: PolicyModel, cfg: RenderConfig, version: int) -> Ruleset:
        structure = self._structure(model, cfg)
        static = cfg.static
        chains = {t: dict(structure.chains[t]) for t in c.TABLES}

        def add(table: str, items: Iterable[Chain]) -> None:
            for chain in items:
                chains[table][chain.name] = chain

        add("filter", self._cached(("static-filter", version, cfg), lambda: s.filter_chains(static, version)))
        # Only the prefixes workloads may spoof change the raw chains.
        spoof = tuple(a for a in model.anti_spoofing if a.allowed_prefixes)
        skip = tuple((a.interface, a.allowed_prefixes) for a in spoof)
        add("raw", self._cached(("static-raw", version, cfg, skip), lambda: s.raw_chains(static, version, spoof)))
        add("mangle", self._cached(("static-mangle", version, cfg), lambda: s.mangle_chains(static, version)))
        masq = model.nat.masq_pools
        masq_name = masq.name(version) if masq.members(version) else None
        all_pools = model.nat.all_pools.name(version)
        add("nat", self._cached(("static-nat", masq_name, all_pools), lambda: s.nat_chains(masq_name, all_pools)))
        set_ids: set[str] = {model.nat.all_pools.id, model.nat.masq_pools.id} if masq_name else set()

        # The policy and profile chains, rendered for this version: kept from the last
        # pass unless the policy's content id changed.
        for table in ("filter", "raw", "mangle"):
            target = chains[table]
            for kind, wanted, source, make in (
                ("policy", structure.policies[table], model.policies, _policy_chain),
                ("profile", structure.profiles[table], model.profiles, _profile_chain),
            ):
                slot = (version, table, kind)
                old = self._rendered_old.get(slot)
                fresh = self._changed_ids(model)[kind]
                if old is not None and old[0] == cfg and old[3] == wanted:
                    # The same chains are wanted: re-render those whose content changed.
                    stale = fresh & old[4]
                    if not stale:
                        self._rendered_new[slot] = old
                        target.update(old[5])
                        set_ids.update(old[2])
                        continue
                    cur, by_name, used = dict(old[1]), dict(old[5]), old[2]
                    for key in stale:
                        for direction in DIRECTIONS:
                            item = (key, direction)
                            if item not in cur:
                                continue
                            chain, ids = make(model, source[key], direction, version, cfg, table)
                            if ids != cur[item][2]:
                                used = None
                            del by_name[cur[item][1].name]
                            cur[item] = (source[key].id, chain, ids)
                            by_name[chain.name] = chain
                    if used is None:
                        used = frozenset(i for entry in cur.values() for i in entry[2])
                    self._rendered_new[slot] = (cfg, cur, used, old[3], old[4], by_name)
                    target.update(by_name)
                    set_ids.update(used)
                    continue
                prev = old[1] if old is not None and old[0] == cfg else {}
                cur = {}
                changed = len(wanted) != len(prev)  # the union of set ids must be recomputed
                for item in wanted:
                    obj_id = source[item[0]].id
                    entry = prev.get(item)
                    if entry is None or entry[0] != obj_id:
                        chain, ids = make(model, source[item[0]], item[1], version, cfg, table)
                        changed = changed or entry is None or entry[2] != ids
                        entry = (obj_id, chain, ids)
                    cur[item] = entry
                if changed or old is None:
                    used = frozenset(i for entry in cur.values() for i in entry[2])
                else:
                    used = old[2]
                by_name = {entry[1].name: entry[1] for entry in cur.values()}
                keys = frozenset(item[0] for item in wanted)
                self._rendered_new[slot] = (cfg, cur, used, frozenset(wanted), keys, by_name)
                target.update(by_name)
                set_ids.update(used)

        tables: dict[str, TableSpec] = {}
        for table in c.TABLES:
            inserts, appends = self._cached(("hooks", table, cfg.marks, cfg.insert_mode), lambda t=table: s.hooks(static, t))
            tables[table] = TableSpec(chains[table], inserts, appends)

        # The IP sets the rules refer to.
        family = "inet" if version == 4 else "inet6"
        ipsets = {}
        known = model.ip_sets
        prev = self._sets_old.setdefault(version, {})
        new = self._sets_new.setdefault(version, {})
        for set_id in set_ids:
            ipset = known.get(set_id)
            if ipset is None:  # a set the model does not know: keep it empty
                name = ipset_name(set_id, version)
                ipsets[name] = DesiredSet(name, "hash:net", family, frozenset())
                continue
            members = ipset.members_v4 if version == 4 else ipset.members_v6
            cached = prev.get(set_id)
            if cached is None or cached[0] != members or cached[1].set_type != ipset.spec.set_type:
                frozen = frozenset(canonical_member(m, version) for m in members)
                cached = (members, DesiredSet(ipset.name(version), ipset.spec.set_type, family, frozen))
            new[set_id] = cached
            ipsets[cached[1].name] = cached[1]
        return Ruleset(version, tables, ipsets)

    # --- endpoint chains ---------------------------------------------------------------

    def _tiers(self, model: PolicyModel, chain: EndpointPolicy, direction: str) -> tuple[tuple[e.Tier, ...], _Needs]:
        tiers, groups, policies = [], [], []
        names = self._policy_names(model)
        for tier in chain.tiers:
            entries = [names[k] for k in tier.policies]
            key_of = {names[k][0]: k for k in tier.policies}
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
        token = self._chain_token(model, chain)

        def make() -> tuple[Chain, _Needs]:
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

        key = ("endpoint", table, name, chain.id, kind, token, failsafe, allow, drop_encap, cfg)
        return self._cached(key, make)

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


def _unique_heps(model: PolicyModel) -> dict[str, ResolvedEndpoint]:
    """Host endpoints with an interface, by interface ("*" as Felix's all-interfaces name)."""
    out: dict[str, ResolvedEndpoint] = {}
    for resolved in model.host_endpoints:
        iface = resolved.endpoint.interface
        if not iface:
            continue
        out.setdefault(c.ALL_INTERFACES if iface == "*" else iface, resolved)
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


def _policy_chain(
    model: PolicyModel, policy: Policy, direction: str, version: int, cfg: RenderConfig, table: str = "filter"
) -> tuple[Chain, frozenset[str]]:
    """The chain of one policy and direction, and the ids of the sets it uses."""
    used: set[str] = set()
    ctx = _rule_context(model, version, cfg, used, table)
    comment = f"Policy {policy_suffix(policy)} {direction}"
    rules = p.render_rules(policy.rules(direction), ctx, log_prefix(cfg.log_prefix, policy=policy), comment)
    return Chain(policy_chain_name(policy, direction), rules), frozenset(used)


def _profile_chain(
    model: PolicyModel, profile: Profile, direction: str, version: int, cfg: RenderConfig, table: str = "filter"
) -> tuple[Chain, frozenset[str]]:
    used: set[str] = set()
    ctx = _rule_context(model, version, cfg, used, table)
    comment = f"Profile {profile.name} {direction}"
    rules = p.render_rules(profile.rules(direction), ctx, log_prefix(cfg.log_prefix, profile=profile.name), comment)
    return Chain(profile_chain_name(profile.name, direction), rules), frozenset(used)


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
