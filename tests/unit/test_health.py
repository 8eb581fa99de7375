"""calico-node's health: the probe answers, the HTTP listener, and the reasons the loop
gives for not being ready (driven through the in-memory datastore)."""

import http.client

import pytest

from etcd_fixtures import free_ports
from pycalico.core import health
from pycalico.core.config import Endpoint
from pycalico.core.listener import Listener, Listeners, Response
from pycalico.core.report import PassReport
from unit.test_loop import Harness, wep
from waiting import wait_for


def get(port, path):
    """(status, body) of GET ``path`` on 127.0.0.1:``port``."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        reply = conn.getresponse()
        return reply.status, reply.read().decode()
    finally:
        conn.close()


def answer(port, path):
    """``get``, or None while nothing listens there."""
    try:
        return get(port, path)
    except ConnectionRefusedError:
        return None


def endpoint(port):
    return Endpoint(enabled=True, host="127.0.0.1", port=port)


def test_an_answer_is_200_with_the_quality_or_503_with_one_reason_per_line():
    assert health.answer("ready", []) == Response(200, "ready\n")
    bad = health.answer("ready", ["datastore unavailable: x", "routing reconcile failed: y"])
    assert (bad.status, bad.body) == (503, "datastore unavailable: x\nrouting reconcile failed: y\n")


def test_status_is_readiness_then_the_plugins_lines():
    ready = health.status_answer([], ["bird: BIRD pid 7: 2 of 2 BGP sessions Established"])
    assert (ready.status, ready.body) == (200, "ready\nbird: BIRD pid 7: 2 of 2 BGP sessions Established\n")
    down = health.status_answer(["datastore unavailable: refused", "first sync not yet applied"], [])
    assert (down.status, down.body) == (503, "not ready: datastore unavailable: refused\n"
                                               "not ready: first sync not yet applied\n")


def test_the_listener_serves_its_paths_and_survives_a_broken_handler():
    (port,) = free_ports(1)

    def broken():
        raise RuntimeError("boom")

    listener = Listener(endpoint(port), {**health.routes(lambda: [], lambda: ["not yet"]), "/x": broken}, "health")
    try:
        assert get(port, "/liveness") == (200, "live\n")
        assert get(port, "/readiness") == (503, "not yet\n")
        assert get(port, "/readiness?verbose=1") == (503, "not yet\n")
        assert get(port, "/nope")[0] == 404
        assert get(port, "/x") == (500, "RuntimeError: boom\n")
        assert get(port, "/liveness") == (200, "live\n")
    finally:
        listener.close()
    with pytest.raises(ConnectionRefusedError):
        get(port, "/liveness")


def test_listeners_rebind_only_a_changed_endpoint_and_close_a_disabled_one():
    a, b, c = free_ports(3)
    routes = health.routes(lambda: [], lambda: [])
    listeners = Listeners()
    try:
        listeners.apply({"health": (endpoint(a), routes), "metrics": (endpoint(b), routes)})
        kept = listeners.get("health")
        listeners.apply({"health": (endpoint(a), routes), "metrics": (endpoint(c), routes)})
        assert listeners.get("health") is kept and listeners.get("metrics").port == c
        assert get(c, "/liveness")[0] == 200
        with pytest.raises(ConnectionRefusedError):
            get(b, "/liveness")
        disabled = Endpoint(enabled=False, host="127.0.0.1", port=c)
        listeners.apply({"health": (endpoint(a), routes), "metrics": (disabled, routes)})
        assert listeners.get("metrics") is None
    finally:
        listeners.close()
    with pytest.raises(ConnectionRefusedError):
        get(a, "/liveness")


def test_a_port_in_use_is_logged_and_the_agent_goes_on(caplog):
    (port,) = free_ports(1)
    routes = health.routes(lambda: [], lambda: [])
    first = Listener(endpoint(port), routes, "first")
    listeners = Listeners()
    try:
        listeners.apply({"health": (endpoint(port), routes)})
        assert listeners.get("health") is None
        assert f"health cannot listen on 127.0.0.1:{port}" in caplog.text
    finally:
        listeners.close()
        first.close()


def report(errors=None):
    return PassReport(number=1, reason="sync", revision=1, started=0, duration=0, errors=errors or {})


def test_readiness_reasons_in_the_order_an_operator_reads_them():
    assert health.readiness_reasons(False, None, None, None, []) == ["waiting for the first datastore sync"]
    assert health.readiness_reasons(True, None, None, None, []) == ["first sync not yet applied"]
    assert health.readiness_reasons(True, report(), None, None, []) == []
    assert health.readiness_reasons(
        True,
        report({"policy": "CalledProcessError: iptables-restore failed"}),
        "etcd unreachable",
        "calico.toml: health.port: expected an integer\ncalico.toml: routing.type: no routing plugin named 'x'",
        ["BIRD is not ready: BGP not established with 198.51.100.12"],
    ) == [
        "datastore unavailable: etcd unreachable",
        "policy reconcile failed: CalledProcessError: iptables-restore failed",
        "config refused: calico.toml: health.port: expected an integer",
        "config refused: calico.toml: routing.type: no routing plugin named 'x'",
        "BIRD is not ready: BGP not established with 198.51.100.12",
    ]


def test_liveness_fails_when_the_loop_stops_or_stalls():
    assert health.liveness_reasons(True, 1.0) == []
    assert health.liveness_reasons(True, 91.0) == ["reconcile loop has not ticked for 91s (timeout 90s)"]
    assert health.liveness_reasons(False, 0.0) == ["reconcile loop is not running"]


def test_the_loop_is_ready_after_its_first_pass_and_says_why_not_during_an_outage(tmp_path):
    h = Harness(tmp_path, [wep("a")])
    h.store.fail()  # down before the agent starts
    with h:
        wait_for(lambda: "datastore unavailable: memory datastore is down" in h.loop.readiness())
        assert "waiting for the first datastore sync" in h.loop.readiness()
        assert h.loop.liveness() == []
        h.store.recover()
        wait_for(lambda: h.loop.readiness() == [], timeout=15)
        h.store.fail()
        wait_for(lambda: h.loop.readiness() == ["datastore unavailable: memory datastore went away"])
        assert h.policy.kernel == {"node1-k8s-a-eth0"}, "an outage keeps what the kernel has"
        h.store.recover()
        wait_for(lambda: h.loop.readiness() == [], timeout=15)
    assert h.loop.liveness() == ["reconcile loop is not running"]


def test_a_failed_pass_is_not_ready_until_a_pass_succeeds(tmp_path):
    with Harness(tmp_path) as h:
        wait_for(lambda: h.loop.passes == 1)
        h.policy.fail_next = True
        h.store.put(wep("a"))
        wait_for(lambda: h.loop.readiness() == ["policy reconcile failed: RuntimeError: injected failure"])
        h.store.put(wep("b"))
        wait_for(lambda: h.loop.readiness() == [])


def test_a_refused_config_is_reported_until_a_good_file_replaces_it(tmp_path, caplog):
    with Harness(tmp_path, watch_config=True) as h:
        wait_for(lambda: h.loop.passes == 1)
        good = h.path.read_text()
        h.path.write_text(good + "\n[intervals.oops]\n")
        (reason,) = wait_for(lambda: h.loop.readiness(), timeout=5)
        assert reason.startswith(f"config refused: {h.path}: intervals.oops: unknown key; valid keys: resync_seconds")
        assert f"config reload refused, keeping the last good config: {h.path}: intervals.oops" in caplog.text
        h.path.write_text(good)  # the running file, back: nothing to reload, nothing refused
        wait_for(lambda: h.loop.readiness() == [], timeout=5)


def test_the_loop_serves_its_probes_over_http(tmp_path):
    port, other = free_ports(2)
    extra = f'[health]\nhost = "127.0.0.1"\nport = {port}\n'
    with Harness(tmp_path, [wep("a")], extra=extra, serve=True, watch_config=True) as h:
        wait_for(lambda: answer(port, "/readiness") == (200, "ready\n"))
        assert get(port, "/liveness") == (200, "live\n")
        h.write(extra=extra.replace(str(port), str(other)))  # [health] moved: rebound
        wait_for(lambda: answer(other, "/readiness") == (200, "ready\n"), timeout=5)
        assert answer(port, "/readiness") is None
    with pytest.raises(ConnectionRefusedError):
        get(other, "/liveness")


def test_probe_flags_say_what_is_wrong_and_exit_1(tmp_path, capsys):
    from pycalico.core import node

    (port,) = free_ports(1)
    path = tmp_path / "calico.toml"
    path.write_text(
        f'[datastore]\ntype = "etcd"\n[routing]\ntype = "bird"\n[routing.bird]\nconfig_dir = "{tmp_path}"\n'
        f'socket = "{tmp_path}/bird.ctl"\n[health]\nhost = "127.0.0.1"\nport = {port}\n'
    )
    assert node.main(["--config", str(path), "-felix-live", "--bird-live"]) == 1
    assert capsys.readouterr().out == (
        "calico/node is not ready: Felix is not live: Connection refused\n"
        f"calico/node is not ready: bird is not live: unable to talk to BIRD on {tmp_path}/bird.ctl: "
        "No such file or directory\n"
    )
    listener = Listener(endpoint(port), health.routes(lambda: [], lambda: ["waiting for the first datastore sync"]), "h")
    try:
        assert node.main(["--config", str(path), "-felix-live"]) == 0
        assert node.main(["--config", str(path), "-felix-ready"]) == 1
        assert capsys.readouterr().out == (
            "calico/node is not ready: felix is not ready: readiness probe reporting 503: "
            "waiting for the first datastore sync\n"
        )
    finally:
        listener.close()
