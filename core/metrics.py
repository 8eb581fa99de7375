"""Prometheus metrics of calico-node, served on ``[metrics]`` (Felix's port 9091, off by
default) as the text exposition format (version 0.0.4), written here by hand.

Names are Felix's where Felix has the figure (``felix_active_local_endpoints``,
``felix_cluster_num_hosts``, ``felix_int_dataplane_apply_time_seconds``,
``felix_resyncs_started``...), ``pycalico_`` otherwise. Everything is counted once per
pass or per datastore event, never per packet; a scrape only formats what is kept.
Plugins add their own samples through ``pycalico_metrics``.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Literal

import attrs

from pycalico.core.calc import DesiredState
from pycalico.core.listener import Response
from pycalico.core.report import PassReport

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
Kind = Literal["counter", "gauge", "summary"]

_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


def _check_name(_inst: object, attribute: attrs.Attribute, value: str) -> None:
    if not _NAME.fullmatch(value):
        raise ValueError(f"metric {attribute.name} {value!r} is not a Prometheus metric name")


def _labels(value: Mapping[str, str] | Iterable[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    pairs = tuple(sorted(value.items() if isinstance(value, Mapping) else value))
    for key, _ in pairs:
        if not _LABEL.fullmatch(key) or key.startswith("__"):
            raise ValueError(f"metric label {key!r} is not a Prometheus label name")
    return tuple((key, str(text)) for key, text in pairs)


@attrs.frozen
class Sample:
    """One value of one metric. ``family`` groups the ``_sum`` and ``_count`` of a
    summary under its name (empty: the sample's own name)."""

    name: str = attrs.field(validator=_check_name)
    value: float
    help: str
    kind: Kind = "gauge"
    labels: tuple[tuple[str, str], ...] = attrs.field(default=(), converter=_labels)
    family: str = ""

    @property
    def family_name(self) -> str:
        return self.family or self.name


def _value(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def _escape(text: str, quote: bool) -> str:
    text = text.replace("\\", "\\\\").replace("\n", "\\n")
    return text.replace('"', '\\"') if quote else text


def exposition(samples: Iterable[Sample]) -> str:
    """The samples in Prometheus' text format: each family once, with its HELP and
    TYPE, in the order first seen. ValueError if two samples are the same series or a
    family is given two types."""
    families: dict[str, list[Sample]] = {}
    for sample in samples:
        families.setdefault(sample.family_name, []).append(sample)
    out = []
    for family, members in families.items():
        kinds = {s.kind for s in members}
        if len(kinds) > 1:
            raise ValueError(f"metric {family} is given as {' and '.join(sorted(kinds))}")
        out.append(f"# HELP {family} {_escape(members[0].help, quote=False)}\n# TYPE {family} {kinds.pop()}\n")
        seen = set()
        for s in members:
            if (s.name, s.labels) in seen:
                raise ValueError(f"metric {s.name}{dict(s.labels) or ''} is given twice")
            seen.add((s.name, s.labels))
            labels = ",".join(f'{k}="{_escape(v, quote=True)}"' for k, v in s.labels)
            out.append(f"{s.name}{{{labels}}} {_value(s.value)}\n" if labels else f"{s.name} {_value(s.value)}\n")
    return "".join(out)


def summary(name: str, help: str, count: int, total: float, labels: Mapping[str, str] | None = None) -> list[Sample]:
    """A summary without quantiles (what client_golang exposes by default): its
    ``_sum`` and ``_count``."""
    labels = labels or {}
    return [
        Sample(f"{name}_sum", total, help, "summary", labels, family=name),
        Sample(f"{name}_count", count, help, "summary", labels, family=name),
    ]


# Cluster-wide counts, by the kind of resource Felix counts for each.
CLUSTER_COUNTS = (
    ("felix_cluster_num_hosts", "Total number of Calico hosts in the cluster.", ("Node",)),
    ("felix_cluster_num_workload_endpoints", "Total number of workload endpoints cluster-wide.", ("WorkloadEndpoint",)),
    ("felix_cluster_num_host_endpoints", "Total number of host endpoints cluster-wide.", ("HostEndpoint",)),
    ("felix_cluster_num_policies", "Total number of policies in the cluster.", ("NetworkPolicy", "GlobalNetworkPolicy")),
    ("felix_cluster_num_profiles", "Total number of profiles in the cluster.", ("Profile",)),
    ("felix_cluster_num_tiers", "Total number of Calico tiers in the cluster.", ("Tier",)),
)
DATAPLANE_SLOTS = ("routing", "policy")  # the steps that write the kernel


@attrs.define
class _Timing:
    count: int = 0
    total: float = 0.0


class LoopMetrics:
    """What the reconcile loop counts: updated from the loop thread (``passed``,
    ``resync_started``, ...), read from the metrics listener's (``samples``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._passes: dict[str, int] = {}
        self._steps: dict[str, _Timing] = {}
        self._failures: dict[str, int] = {}
        self._apply = _Timing()
        self._dataplane_failures = 0
        self._resyncs = 0
        self._datastore_errors = 0
        self._reloads = {"applied": 0, "refused": 0}
        self._gauges: dict[str, int] = {}

    def passed(self, report: PassReport, state: DesiredState) -> None:
        """Count a pass and take the sizes of its state."""
        local = len(state.local("WorkloadEndpoint")) + len(state.local("HostEndpoint"))
        counts = {name: sum(len(state.of_kind(k)) for k in kinds) for name, _, kinds in CLUSTER_COUNTS}
        with self._lock:
            self._passes[report.reason] = self._passes.get(report.reason, 0) + 1
            for step, seconds in report.timings.items():
                timing = self._steps.setdefault(step, _Timing())
                timing.count += 1
                timing.total += seconds
            for step in report.errors:
                self._failures[step] = self._failures.get(step, 0) + 1
            self._apply.count += 1
            self._apply.total += sum(report.timings.get(step, 0.0) for step in DATAPLANE_SLOTS)
            if any(step in report.errors for step in DATAPLANE_SLOTS):
                self._dataplane_failures += 1
            self._gauges = {"felix_active_local_endpoints": local, **counts}

    def resync_started(self) -> None:
        with self._lock:
            self._resyncs += 1

    def datastore_failed(self) -> None:
        with self._lock:
            self._datastore_errors += 1

    def reloaded(self, applied: bool) -> None:
        with self._lock:
            self._reloads["applied" if applied else "refused"] += 1

    def samples(self, in_sync: bool, ready: bool) -> list[Sample]:
        with self._lock:
            gauges = dict(self._gauges)
            out = [
                Sample("felix_active_local_endpoints", gauges.get("felix_active_local_endpoints", 0),
                       "Number of active endpoints (workload+host) on this host."),
                *(Sample(name, gauges.get(name, 0), text) for name, text, _ in CLUSTER_COUNTS),
                Sample("felix_resyncs_started", self._resyncs,
                       "Number of times the agent has started resyncing with the datastore.", "counter"),
                Sample("felix_resync_state", 3 if in_sync else 1,
                       "Current datastore state (1 waiting for the datastore, 3 in sync).", "gauge"),
                *summary("felix_int_dataplane_apply_time_seconds",
                         "Time in seconds that it took to apply a dataplane update.",
                         self._apply.count, self._apply.total),
                Sample("felix_int_dataplane_failures", self._dataplane_failures,
                       "Number of times dataplane updates failed and will be retried.", "counter"),
                *(Sample("pycalico_reconcile_passes_total", n, "Reconcile passes, by why they ran.", "counter",
                         {"reason": reason}) for reason, n in sorted(self._passes.items())),
                *(s for step, t in sorted(self._steps.items())
                  for s in summary("pycalico_reconcile_duration_seconds", "Time each step of a pass took.",
                                   t.count, t.total, {"slot": step})),
                *(Sample("pycalico_reconcile_failures_total", n, "Passes in which a step failed, by step.",
                         "counter", {"slot": step}) for step, n in sorted(self._failures.items())),
                Sample("pycalico_datastore_errors_total", self._datastore_errors,
                       "Times the datastore sync failed (it then starts over from a new snapshot).", "counter"),
                *(Sample("pycalico_config_reloads_total", n, "calico.toml reloads, by outcome.", "counter",
                         {"result": result}) for result, n in sorted(self._reloads.items())),
                Sample("pycalico_ready", 1 if ready else 0, "1 when /readiness answers 200."),
            ]
        return out


# A policy dataplane's kernel calls, by Felix's names: (writes, reads, write errors).
POLICY_CALLS = {
    "iptables": ("felix_iptables_restore_calls", "felix_iptables_save_calls", "felix_iptables_restore_errors"),
    "nftables": ("felix_nft_calls", "felix_nft_list_calls", "felix_nft_errors"),
}


@attrs.frozen
class PolicySizes:
    """The sizes of a compiled policy model (``pycalico.core.policy.PolicyModel``),
    taken once per pass by the policy plugin."""

    policies: int = 0
    profiles: int = 0
    ip_sets: int = 0
    members_v4: int = 0
    members_v6: int = 0

    @classmethod
    def of(cls, model) -> PolicySizes:
        sets = model.ip_sets.values()
        return cls(len(model.policies), len(model.profiles), len(model.ip_sets),
                   sum(len(s.members_v4) for s in sets), sum(len(s.members_v6) for s in sets))


class PolicyCounters:
    """A policy plugin's bookkeeping for ``policy_samples``, one per dataplane."""

    def __init__(self) -> None:
        self.sizes = PolicySizes()
        self.changed_passes = 0  # passes that wrote to the kernel
        self.errors = 0

    def track(self, model, apply: Callable[[], list[str]]) -> list[str]:
        """``apply()`` (a pass of ``model``), counted."""
        try:
            lines = apply()
        except Exception:
            self.errors += 1
            raise
        self.sizes = PolicySizes.of(model)
        self.changed_passes += bool(lines)
        return lines


def policy_samples(dataplane: str, sizes: PolicySizes, writes: int, reads: int, errors: int) -> list[Sample]:
    """What a policy plugin (``iptables`` or ``nftables``) exposes: its kernel calls
    under Felix's names and the sizes of the policy it last applied."""
    write, read, failed = POLICY_CALLS[dataplane]
    return [
        Sample("felix_active_local_policies", sizes.policies,
               "Number of active policies on this host (those that select a local endpoint)."),
        Sample("pycalico_active_local_profiles", sizes.profiles, "Number of profiles used by local endpoints."),
        Sample("pycalico_ip_sets", sizes.ip_sets, "Number of IP sets the active rules use."),
        *(Sample("pycalico_ip_set_members", n, "Members of the IP sets the active rules use, by IP version.",
                 labels={"ip_version": v}) for v, n in (("4", sizes.members_v4), ("6", sizes.members_v6))),
        Sample(write, writes, f"Number of {dataplane} transactions written to the kernel.", "counter"),
        Sample(read, reads, f"Number of {dataplane} read-backs of the kernel's rules.", "counter"),
        Sample(failed, errors, f"Number of failed {dataplane} passes.", "counter"),
    ]


def response(samples: Iterable[Sample]) -> Response:
    return Response(200, exposition(samples), CONTENT_TYPE)
