"""The iptables policy dataplane: Felix's iptables and ipset rules for this node.

``[policy] type = "iptables"`` in calico.toml. Each pass compiles the desired state into
the policy model (a :class:`pycalico.core.policy.Compiler` per namespace, which redoes
only what changed since its last pass), renders Felix's chains from it
and writes only what differs from the kernel, in one ``iptables-restore --noflush --wait``
per IP version (a transaction per changed table), with the IP sets written before and
cleaned up after. It acts on the network namespace of the calling thread.

The chain layout is Felix's (``felix/rules/``): hooks at the top of the kernel chains
into ``cali-INPUT`` / ``cali-FORWARD`` / ``cali-OUTPUT`` (filter), ``cali-PREROUTING`` /
``cali-OUTPUT`` (raw), ``cali-PREROUTING`` / ``cali-POSTROUTING`` (mangle) and
``cali-PREROUTING`` / ``cali-POSTROUTING`` / ``cali-OUTPUT`` (nat); dispatch by interface
to ``cali-tw-`` / ``cali-fw-`` (workloads) and ``cali-th-`` / ``cali-fh-`` (host
endpoints) chains; tiers of ``cali-pi-`` / ``cali-po-`` policy chains (grouped in
``cali-gi-`` / ``cali-go-`` chains where they share a selector), then ``cali-pri-`` /
``cali-pro-`` profile chains; ``cali40`` / ``cali60`` IP sets for selectors, named ports
and pools; failsafe chains; raw-table RPF anti-spoofing; ``cali-nat-outgoing``.

Where this differs from Felix (v3.28 unless said):

* Deny is ``-j DROP`` (or REJECT) in the policy chain, with no drop mark; the mark bits are
  accept, pass, scratch0, scratch1, lowest first in ``mark_mask``. REJECT is used in the
  filter table only (raw and mangle chains DROP).
* Policy chain names are the tiered v3 ones (``cali-pi-<tier>/<name>``,
  ``<tier>/<namespace>/<name>`` for a NetworkPolicy), hashed beyond 28 characters.
* A rule whose match needs three or more OR-blocks clears the block bit before each
  block (Felix reuses it uncleared).
* Hooks in kernel chains are repaired by deleting our rules by their spec (not by rule
  number), so a rule inserted meanwhile by someone else is never hit; a stale chain of
  ours that a chain we do not own still jumps to is emptied, not deleted.
* Not rendered, for want of data in the model: the IPIP / VXLAN / WireGuard host rules
  (``all-hosts-net``, ``this-host`` sets), tunnel-source masquerade, NATOutgoingAddress and
  NAT port ranges, floating IPs (``cali-fip-*`` stay empty), ``cali-cidr-block`` entries,
  IPVS endpoint marks, OpenStack special cases, flow-log NFLOG, staged policies. The
  per-interface ``rp_filter`` sysctl is left to whoever creates the interface.
* ``endpoint_to_host_action`` defaults to ACCEPT (calico.yaml) and, like Felix's
  environment variables, wins over FelixConfiguration.
* Turning IPv6 off leaves the ip6tables rules in place; :meth:`IptablesPlugin.cleanup`
  removes everything of ours.

Modules: ``options`` (the ``[policy.iptables]`` table), ``chains`` (rules, chains, hashes,
names, marks), ``policy`` (policy rules), ``endpoints`` (endpoint, group and dispatch
chains), ``static`` (static chains and hooks), ``ruleset`` (the model rendered pass after
pass: only what the model's changes list), ``diff`` and ``ipsets`` (what to write),
``kernel`` (the commands), ``dataplane`` (a pass).

Registered through the entry point ``iptables`` of the group ``pycalico.policy``.
"""

from __future__ import annotations

import threading
from typing import Any

from pycalico.core import metrics
from pycalico.core.nsenter import netns_id
from pycalico.core.policy import PolicyModel
from pycalico.hooks import hookimpl
from pycalico.plugins.policy.handover import Handover, remove_nftables

from .dataplane import Dataplane
from .options import Options

NAME = "iptables"

__all__ = ["NAME", "Dataplane", "IptablesPlugin", "Options", "plugin"]


class IptablesPlugin:
    """The hook implementations; one :class:`Dataplane` per network namespace and options."""

    def __init__(self) -> None:
        self._dataplanes: dict[tuple[tuple[int, int], Options], Dataplane] = {}
        self._counters: dict[Dataplane, metrics.PolicyCounters] = {}
        self._lock = threading.Lock()
        self._handover = Handover(remove_nftables)

    def dataplane(self, options: Options | None = None) -> Dataplane:
        """The dataplane of the calling thread's network namespace."""
        options = options or Options()
        key = (netns_id(), options)
        with self._lock:
            dp = self._dataplanes.get(key)
            if dp is None:
                dp = self._dataplanes[key] = Dataplane(options)
                self._counters[dp] = metrics.PolicyCounters()
            return dp

    def reconcile_model(self, model: PolicyModel, options: Options | None = None) -> list[str]:
        dp = self.dataplane(options)
        return self._counters[dp].track(model, lambda: dp.apply(model))

    def reconcile(self, state: Any, options: Options | None = None) -> list[str]:
        """Converge this namespace to ``state`` (a DesiredState); one line per change."""
        return self.reconcile_model(self.dataplane(options).compiler.compile(state), options)

    def cleanup(self, options: Options | None = None) -> list[str]:
        """Remove all our hooks, chains and IP sets from this namespace."""
        return self.dataplane(options).cleanup()

    @hookimpl
    def pycalico_config_schema(self, slot: str, name: str) -> type | None:
        return Options if (slot, name) == ("policy", NAME) else None

    @hookimpl
    def pycalico_reconcile_policy(self, state: Any, config: Any) -> list[str] | None:
        slot = config.policy
        if slot.type != NAME:
            return None
        return self._handover() + self.reconcile(state, slot.options)

    @hookimpl
    def pycalico_metrics(self, config: Any) -> list | None:
        if config.policy.type != NAME:
            return None
        with self._lock:
            dp = self._dataplanes.get((netns_id(), config.policy.options or Options()))
            counters = self._counters.get(dp) if dp is not None else None
        if dp is None or counters is None:
            return None
        return metrics.policy_samples(NAME, counters.sizes, dp.writes, dp.reads, counters.errors)

    @hookimpl
    def pycalico_unconfigure(self, config: Any) -> None:
        # The rules stay (as Felix leaves them on exit); only what we remember goes.
        with self._lock:
            self._dataplanes.clear()
            self._counters.clear()
        self._handover.reset()


plugin = IptablesPlugin()
