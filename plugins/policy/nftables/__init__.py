"""nftables: Calico's policy dataplane in one nftables table, ``inet calico``.

``[policy] type = "nftables"`` in calico.toml. Each pass compiles the desired state
(a :class:`pycalico.core.policy.Compiler` per namespace, which redoes only what changed
since its last pass) and makes the table ``inet calico`` of the network
namespace the agent runs in match it, in one atomic ``nft -f`` transaction that touches
only the sets, maps and chains that differ. No other table is read or written.

Modules:

* :mod:`.options`: ``[policy.nftables]`` (deny action, endpoint-to-host action, log prefix,
  failsafe ports, refresh interval), each over the FelixConfiguration value;
* :mod:`.names`: set and chain names (Felix's);
* :mod:`.render`: rules and chains as nft text (sets, verdict maps, policy, profile,
  endpoint, dispatch, failsafe, NAT and base chains);
* :mod:`.table`: the whole desired table, kept pass after pass: only what the model's
  changes list is rendered again, and the result says what it touched;
* :mod:`.state`: the comparable shape of a table, and the parser of ``nft -j`` output;
* :mod:`.transaction`: the difference between two tables as one nft script (only the
  touched chains and sets compared when the kernel holds the previous result);
* :mod:`.kernel`: ``nft`` and the ruleset generation counter;
* :mod:`.dataplane`: one namespace's table across passes (read back only when the
  generation moved, repair, retry).

Control flow inside the table is Felix's: policy chains are shared by every endpoint they
select, so Allow and Pass set the accept (0x10000) or pass (0x20000) mark bit and
``return``; endpoint chains test the bits (:mod:`.render` has the whole structure).

The kernel's table is read back (``nft -j list table inet calico``) only when the
nftables ruleset generation moved since this plugin's last write, or every
``refresh_seconds``: a change by anyone else (a deleted chain, element or table) is seen
on the next pass and repaired, and reported as such; a quiet kernel costs a netlink query.

Where this differs from Felix (which keeps one ``calico`` table per IP family, all base
chains at priority 0): one ``inet`` table for both families, with rules that match
addresses rendered once per family; base chains at the hooks' usual priorities (raw,
mangle, filter, srcnat); anti-spoofing by an ``ifname . address`` set in raw prerouting
rather than rp_filter; sets only when not empty, and plain (not interval) while they hold
addresses only; policy groups for any tier of two or more policies (Felix groups by
selector); rules with OR-ed lists split into several nft rules rather than mark-bit
blocks; no IPVS, WireGuard, BPF, DSCP or QoS rules, no service sets' members.
"""

from __future__ import annotations

import threading

from pycalico.core import metrics
from pycalico.core.nsenter import netns_id
from pycalico.core.policy.model import PolicyModel
from pycalico.hooks import hookimpl
from pycalico.plugins.policy.handover import Handover, remove_iptables

from .dataplane import Dataplane
from .kernel import Nft, NftError
from .options import Options
from .render import Effective, effective

NAME = "nftables"

__all__ = ["NAME", "Dataplane", "Effective", "NftError", "NftablesPolicy", "Options", "plugin"]


class NftablesPolicy:
    """The hook implementations; ``plugin`` below is the registered instance.

    One :class:`Dataplane` per network namespace (by the inode of the calling thread's
    namespace), so that one process can drive several namespaces (the tests do).
    """

    def __init__(self) -> None:
        self._dataplanes: dict[tuple[tuple[int, int], str], Dataplane] = {}
        self._counters: dict[Dataplane, metrics.PolicyCounters] = {}
        self._lock = threading.Lock()
        self._handover = Handover(remove_iptables)

    def dataplane(self, options: Options | None = None) -> Dataplane:
        """The dataplane of the calling thread's network namespace."""
        command = (options or Options()).nft
        key = (netns_id(), command)
        with self._lock:
            dp = self._dataplanes.get(key)
            if dp is None:
                dp = self._dataplanes[key] = Dataplane(Nft(command))
                self._counters[dp] = metrics.PolicyCounters()
            return dp

    def reconcile_model(self, model: PolicyModel, options: Options | None = None) -> list[str]:
        """Make ``inet calico`` in this thread's namespace match ``model``; one line per change."""
        options = options or Options()
        dp = self.dataplane(options)
        return self._counters[dp].track(model, lambda: dp.apply(model, effective(model, options), options.refresh_seconds))

    def reconcile(self, state, options: Options | None = None) -> list[str]:
        """Make ``inet calico`` in this thread's namespace match ``state`` (a DesiredState)."""
        return self.reconcile_model(self.dataplane(options).compiler.compile(state), options)

    @hookimpl
    def pycalico_config_schema(self, slot: str, name: str) -> type | None:
        return Options if (slot, name) == ("policy", NAME) else None

    @hookimpl
    def pycalico_reconcile_policy(self, state, config) -> list[str]:
        options = config.policy.options if isinstance(config.policy.options, Options) else Options()
        return self._handover() + self.reconcile(state, options)

    @hookimpl
    def pycalico_node_status(self, state) -> list[tuple[str, str]] | None:
        key = netns_id()
        with self._lock:
            dp = next((d for (ns, _), d in self._dataplanes.items() if ns == key), None)
        if dp is None or dp.written is None:
            return None
        table = dp.written
        return [("nftables", f"table inet calico: {len(table.chains)} chains, {len(table.sets)} sets, {len(table.maps)} maps")]

    @hookimpl
    def pycalico_metrics(self, config) -> list | None:
        if config.policy.type != NAME:
            return None
        options = config.policy.options if isinstance(config.policy.options, Options) else Options()
        with self._lock:
            dp = self._dataplanes.get((netns_id(), options.nft))
            counters = self._counters.get(dp) if dp is not None else None
        if dp is None or counters is None:
            return None
        # One `nft -f` transaction per pass that changed something.
        return metrics.policy_samples(NAME, counters.sizes, counters.changed_passes, dp.reads, counters.errors)

    @hookimpl
    def pycalico_unconfigure(self, config) -> None:
        # The table stays: packets keep being filtered while the agent restarts, as Felix's do.
        with self._lock:
            self._dataplanes.clear()
            self._counters.clear()
        self._handover.reset()


plugin = NftablesPolicy()
