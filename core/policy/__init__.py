"""Calico's network policy model: what the iptables and nftables dataplanes both render.

``compile(state)`` turns a :class:`~pycalico.core.calc.DesiredState` into a frozen
:class:`PolicyModel` (a :class:`Compiler` does it pass after pass, redoing only what
changed): normalised policies and profiles (:mod:`.rules`), the sets their
selectors and named ports stand for (:mod:`.ipsets`), each endpoint's ordered tiers and
profiles per direction (:mod:`.resolve`), failsafe ports, natOutgoing pools and
anti-spoofing data (:mod:`.model`). :func:`verdict` (:mod:`.evaluate`) judges a packet
against the model as Felix's chains would.

Modules: ``ids`` (Calico's set ids and names, content hashes), ``selectors`` (Calico's
selector rewrites), ``rules``, ``ipsets``, ``endpoints`` (effective labels), ``resolve``,
``model``, ``compiler``, ``evaluate``.
"""

from pycalico.core.policy.compiler import Compiler, compile
from pycalico.core.policy.endpoints import Endpoint, EndpointKey, NamedPort
from pycalico.core.policy.evaluate import Peer, Step, Verdict, format_matrix, reachability, verdict
from pycalico.core.policy.ipsets import IPSet, SetSpec
from pycalico.core.policy.model import (
    AntiSpoof,
    Failsafe,
    NatOutgoing,
    PolicyModel,
    ProtoPort,
    Settings,
)
from pycalico.core.policy.resolve import EndpointPolicy, ResolvedEndpoint, TierInfo, TierPolicies
from pycalico.core.policy.rules import PortRange, Policy, Profile, Rule, Side

__all__ = [
    "AntiSpoof",
    "Compiler",
    "Endpoint",
    "EndpointKey",
    "EndpointPolicy",
    "Failsafe",
    "IPSet",
    "NamedPort",
    "NatOutgoing",
    "Peer",
    "Policy",
    "PolicyModel",
    "PortRange",
    "Profile",
    "ProtoPort",
    "ResolvedEndpoint",
    "Rule",
    "SetSpec",
    "Settings",
    "Side",
    "Step",
    "TierInfo",
    "TierPolicies",
    "Verdict",
    "compile",
    "format_matrix",
    "reachability",
    "verdict",
]
