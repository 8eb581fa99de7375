"""Prometheus metrics: the text exposition written by hand, and what the loop counts
(driven through the in-memory datastore and scraped over HTTP)."""

import re
from types import SimpleNamespace

import pytest

from etcd_fixtures import free_ports
from pycalico.core import metrics
from pycalico.core.metrics import Sample
from unit.test_health import answer
from unit.test_loop import Harness, wep
from waiting import wait_for

# One line of the text format 0.0.4: a comment, or name{labels} value.
LINE = re.compile(
    r'# (HELP|TYPE) [a-zA-Z_:][a-zA-Z0-9_:]* .+'
    r'|[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\]|\\.)*",?)*\})? (-?[0-9.]+(e[+-]?[0-9]+)?|[+-]Inf|NaN)'
)


def parse(text):
    """``{series: value}`` of an exposition, after checking every line's syntax and that
    each family's TYPE precedes its samples."""
    assert text.endswith("\n")
    series, typed = {}, set()
    for line in text.splitlines():
        assert LINE.fullmatch(line), f"not the text format: {line!r}"
        if line.startswith("# TYPE "):
            typed.add(line.split()[2])
        elif not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            assert re.sub(r"_(sum|count)$", "", name.split("{")[0]) in typed | {name.split("{")[0]}
            series[name] = float(value)
    return series


def test_the_exposition_groups_families_and_formats_values_and_labels():
    text = metrics.exposition([
        Sample("a_total", 3, "A thing.", "counter", {"slot": "policy"}),
        Sample("b", 0.25, "Quote \" and\nnewline in help."),
        Sample("a_total", 4, "A thing.", "counter", {"slot": "routing"}),
        *metrics.summary("t_seconds", "Time.", 2, 1.5, {"slot": "node"}),
        Sample("c", float("inf"), "Big.", labels={"path": 'C:\\dir "x"\n'}),
        Sample("d", float("nan"), "Unknown."),
    ])
    assert text == (
        "# HELP a_total A thing.\n# TYPE a_total counter\n"
        'a_total{slot="policy"} 3\na_total{slot="routing"} 4\n'
        '# HELP b Quote " and\\nnewline in help.\n# TYPE b gauge\nb 0.25\n'
        "# HELP t_seconds Time.\n# TYPE t_seconds summary\n"
        't_seconds_sum{slot="node"} 1.5\nt_seconds_count{slot="node"} 2\n'
        '# HELP c Big.\n# TYPE c gauge\nc{path="C:\\\\dir \\"x\\"\\n"} +Inf\n'
        "# HELP d Unknown.\n# TYPE d gauge\nd NaN\n"
    )
    assert parse(text)['a_total{slot="routing"}'] == 4


@pytest.mark.parametrize("make, message", [
    (lambda: Sample("1bad", 1, "x"), "metric name '1bad' is not a Prometheus metric name"),
    (lambda: Sample("ok", 1, "x", labels={"bad-label": "v"}), "metric label 'bad-label' is not a Prometheus label name"),
    (lambda: Sample("ok", 1, "x", labels={"__reserved": "v"}), "metric label '__reserved'"),
])
def test_a_bad_name_is_refused_naming_it(make, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        make()


def test_a_series_given_twice_or_a_family_given_two_types_is_refused():
    with pytest.raises(ValueError, match=r"metric x\{'k': 'v'\} is given twice"):
        metrics.exposition([Sample("x", 1, "h", labels={"k": "v"}), Sample("x", 2, "h", labels={"k": "v"})])
    with pytest.raises(ValueError, match="metric x is given as counter and gauge"):
        metrics.exposition([Sample("x", 1, "h", "counter", {"a": "1"}), Sample("x", 2, "h", "gauge", {"a": "2"})])


def test_the_loop_counts_passes_endpoints_and_cluster_sizes_and_serves_them(tmp_path):
    (port,) = free_ports(1)
    extra = f'[metrics]\nenabled = true\nhost = "127.0.0.1"\nport = {port}\n'
    resources = [wep("a"), wep("b"), wep("z", node="node2")]
    with Harness(tmp_path, resources, extra=extra, serve=True) as h:
        wait_for(lambda: h.loop.passes == 1)
        status, text = wait_for(lambda: answer(port, "/metrics"))
        assert status == 200
        scraped = parse(text)
        assert scraped["felix_active_local_endpoints"] == 2
        assert scraped["felix_cluster_num_workload_endpoints"] == 3
        assert scraped["felix_cluster_num_hosts"] == 1  # the harness's node1
        assert scraped["felix_resyncs_started"] == 1
        assert scraped['pycalico_reconcile_passes_total{reason="sync"}'] == 1
        assert scraped["felix_int_dataplane_apply_time_seconds_count"] == 1
        assert scraped['pycalico_reconcile_duration_seconds_count{slot="policy"}'] == 1
        assert scraped["pycalico_ready"] == 1

        h.policy.fail_next = True
        h.store.put(wep("c"))
        wait_for(lambda: h.loop.passes == 2)
        scraped = parse(answer(port, "/metrics")[1])
        assert scraped["felix_active_local_endpoints"] == 3
        assert scraped['pycalico_reconcile_failures_total{slot="policy"}'] == 1
        assert scraped["felix_int_dataplane_failures"] == 1
        assert scraped["pycalico_ready"] == 0

        h.store.fail()
        wait_for(lambda: h.loop.datastore_error is not None)
        h.store.recover()
        wait_for(lambda: h.loop.passes == 3)
        scraped = parse(answer(port, "/metrics")[1])
        assert scraped["pycalico_datastore_errors_total"] == 1
        assert scraped["felix_resyncs_started"] == 2
        assert scraped['pycalico_reconcile_passes_total{reason="update"}'] == 1


def test_metrics_are_off_unless_enabled(tmp_path):
    (port,) = free_ports(1)
    extra = f'[metrics]\nhost = "127.0.0.1"\nport = {port}\n'
    with Harness(tmp_path, extra=extra, serve=True) as h:
        wait_for(lambda: h.loop.passes == 1)
        assert answer(port, "/metrics") is None


def test_policy_samples_use_felixs_names_for_each_dataplane():
    sizes = metrics.PolicySizes(policies=3, profiles=2, ip_sets=4, members_v4=10, members_v6=1)
    iptables = parse(metrics.exposition(metrics.policy_samples("iptables", sizes, writes=5, reads=2, errors=1)))
    assert iptables["felix_active_local_policies"] == 3
    assert iptables["felix_iptables_restore_calls"] == 5
    assert iptables["felix_iptables_save_calls"] == 2
    assert iptables["felix_iptables_restore_errors"] == 1
    assert iptables['pycalico_ip_set_members{ip_version="4"}'] == 10
    nft = parse(metrics.exposition(metrics.policy_samples("nftables", sizes, writes=5, reads=2, errors=0)))
    assert (nft["felix_nft_calls"], nft["felix_nft_list_calls"], nft["felix_nft_errors"]) == (5, 2, 0)


def test_policy_counters_count_changed_and_failed_passes():
    model = SimpleNamespace(policies={"p": 1}, profiles={}, ip_sets={})
    counters = metrics.PolicyCounters()
    assert counters.track(model, lambda: ["chain written"]) == ["chain written"]
    assert counters.track(model, lambda: []) == []
    with pytest.raises(RuntimeError):
        counters.track(model, lambda: (_ for _ in ()).throw(RuntimeError("nft failed")))
    assert (counters.changed_passes, counters.errors, counters.sizes.policies) == (1, 1, 1)
