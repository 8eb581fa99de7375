"""calico-node through a datastore outage and through its own SIGKILL, with real packets.

Each test runs a 2-node lab in bird mode, once per policy plugin, with pod ``a`` on
node1 and pod ``b`` on node2:

* etcd killed while ``a`` pings ``b`` every 50 ms: no echo is lost, both agents report
  the datastore on ``/readiness``, and once etcd is back a new policy reaches the kernel
  (``a`` can no longer ping ``b``; ``b`` still pings ``a``) within a bound;
* node1's agent SIGKILLed under a TCP stream from ``a`` to ``b``, then started again:
  the one connection carries every byte without a retransmission, the new agent adopts
  BIRD (same pid, no BGP session restarted on either node), its first pass reports 0
  changes, and the kernel saw none: ``nft monitor`` in node1's namespace prints nothing
  (it sees iptables-nft rules too), every ``iptables-save -c`` counter only grew (a
  replaced rule starts again from 0) and the IP sets hold the same members.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import time

import pytest
from pycalico.core import config as cfg
from pycalico.core import health
from pycalico.core.lab import bgp, pods
from pycalico.core.lab.netns import run_in_netns
from pycalico.core.lab.pods import with_datastore
from pycalico.core.resources import load_resources
from waiting import wait_for

pytestmark = pytest.mark.lab

POLICIES = ["iptables", "nftables"]
PORT = 5001

# A one-connection TCP stream: the receiver accepts once and closes its listener (a
# reconnect would be refused), counts bytes and the longest wait between two reads;
# the sender writes ``rate`` bytes/s in 10 ms chunks, then half-closes and reads back
# the receiver's count.
STREAM = r"""
import json, socket, sys, time
role, port = sys.argv[1], int(sys.argv[2])
if role == "recv":
    server = socket.create_server(("0.0.0.0", port))
    conn, _ = server.accept()
    server.close()
    total, last, gap = 0, time.monotonic(), 0.0
    while data := conn.recv(65536):
        now = time.monotonic()
        gap, last, total = max(gap, now - last), now, total + len(data)
    conn.sendall(str(total).encode())
    conn.close()
    print(json.dumps({"received": total, "max_gap": round(gap, 3)}), flush=True)
else:
    host, seconds, rate = sys.argv[3], float(sys.argv[4]), int(sys.argv[5])
    chunk, sent, error, acked = b"x" * (rate // 100), 0, "", -1
    sock = socket.create_connection((host, port), timeout=5)
    start = time.monotonic()
    try:
        while time.monotonic() - start < seconds:
            sock.sendall(chunk)
            sent += len(chunk)
            time.sleep(0.01)
        sock.shutdown(socket.SHUT_WR)
        acked = int(sock.recv(64) or b"-1")
    except OSError as exc:
        error = str(exc)
    print(json.dumps({"sent": sent, "acked": acked, "error": error}), flush=True)
"""

A_OUT = """
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: a-out, namespace: default}
spec:
  selector: app == 'a'
  types: [Egress]
  egress: [{action: Allow, protocol: TCP, destination: {selector: app == 'b', ports: [5001]}}]
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: b-in, namespace: default}
spec:
  selector: app == 'b'
  types: [Ingress]
  ingress: [{action: Allow, protocol: TCP, source: {selector: app == 'a'}, destination: {ports: [5001]}}]
"""

DENY_TO_B = """
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: deny-to-b, namespace: default}
spec: {selector: app == 'b', types: [Ingress]}
"""


# --- helpers ---------------------------------------------------------------------------


def readiness(lab, node: str) -> str | None:
    """None when the node's agent answers /readiness with 200, else its reasons."""
    n = lab.node(node)
    endpoint = cfg.read(n.config_path).health
    return run_in_netns(n.netns, lambda: health.probe(endpoint, "/readiness", timeout=2), timeout=10)


def create(lab, text: str) -> None:
    def write(ds):
        for resource in load_resources(text):
            ds.create(resource)

    with_datastore(lab, lab.nodes[0], write)


def ping_ok(lab, pod, ip: str) -> bool:
    return pods.exec_in_pod(lab, pod.key, ["ping", "-c", "1", "-W", "1", ip], capture_output=True).returncode == 0


def spawned(lab, pod_or_ns: str, argv: list[str], name: str):
    """Start ``argv`` in a lab namespace (so ``down`` ends it); its pid and log path."""
    log = lab.state_dir / "logs" / f"{name}.log"
    return lab.spawn(pod_or_ns, argv, log, name=name), log


def finished(lab, pid: int, timeout: float) -> None:
    rec = next(p for p in lab.processes if p.pid == pid)
    wait_for(lambda: not rec.alive(), timeout=timeout, what=f"{rec.name} to finish")
    lab.stop(pid)  # reaps it and drops its record


def sessions_since(lab, node: str) -> dict[str, str]:
    """Peer -> when its session last changed state, for the node's Established sessions."""
    return {s["peer"]: s["since"] for s in bgp.node_bgp(lab, lab.node(node))["sessions"]
            if s["info"].startswith("Established")}


def retransmitted(lab, pod) -> int:
    """TCP segments the pod's namespace has retransmitted (/proc/net/snmp is per namespace)."""
    text = pods.exec_in_pod(lab, pod.key, ["cat", "/proc/net/snmp"], capture_output=True, text=True).stdout
    names, values = [line.split()[1:] for line in text.splitlines() if line.startswith("Tcp:")]
    return int(values[names.index("RetransSegs")])


def iptables_counters(lab, node: str) -> dict[tuple[str, str], int]:
    """(table, rule) -> packets, from ``iptables-save -c``."""
    out = lab.exec(node, ["iptables-save", "-c"], capture_output=True, text=True, check=True).stdout
    counters, table = {}, ""
    for line in out.splitlines():
        if line.startswith("*"):
            table = line[1:]
        elif m := re.match(r"\[(\d+):\d+\] (-A .*)", line):
            counters[(table, m.group(2))] = int(m.group(1))
    return counters


def agent_log(lab, node: str) -> str:
    return (lab.state_dir / "logs" / f"calico-node-{node}.log").read_text()


def bird_pid(lab, node: str) -> int:
    return int((lab.state_dir / "nodes" / node / "bird" / "bird.pid").read_text().split()[0])


def two_pods(make_lab, policy: str):
    lab = make_lab(nodes=2, routing="bird", policy=policy)
    a = pods.add_pod(lab, "node1", "default/a", labels={"app": "a"})
    b = pods.add_pod(lab, "node2", "default/b", labels={"app": "b"})
    for node in ("node1", "node2"):
        wait_for(lambda: readiness(lab, node) is None, timeout=30, what=f"{node} ready")
        wait_for(lambda: len(sessions_since(lab, node)) == 1, timeout=30, what=f"{node}'s BGP session")
    return lab, a, b


# --- the tests -------------------------------------------------------------------------


@pytest.mark.parametrize("policy", POLICIES)
def test_etcd_outage_keeps_pods_talking_and_a_later_policy_applies(make_lab, policy):
    lab, a, b = two_pods(make_lab, policy)
    b_ip = b.ips[0].split("/")[0]
    wait_for(lambda: ping_ok(lab, a, b_ip), what="a reaching b")

    # 16 s of echoes every 50 ms, each waited for up to 1 s: etcd is away for 8 of them.
    pinger, ping_log = spawned(lab, a.netns, ["ping", "-i", "0.05", "-c", "320", "-W", "1", b_ip], "ping")
    time.sleep(2)
    etcd = lab.etcd_pid()
    os.kill(etcd, signal.SIGKILL)
    down_at = time.monotonic()
    finished(lab, etcd, timeout=5)
    for node in ("node1", "node2"):
        why = wait_for(lambda: readiness(lab, node), timeout=15, what=f"{node} reporting the outage")
        assert "datastore unavailable" in why, why
    time.sleep(max(0.0, 8 - (time.monotonic() - down_at)))
    lab.start_etcd()
    for node in ("node1", "node2"):
        wait_for(lambda: readiness(lab, node) is None, timeout=20, what=f"{node} ready again after etcd's return")
    finished(lab, pinger, timeout=30)
    m = re.search(r"(\d+) packets transmitted, (\d+) received", ping_log.read_text())
    sent, received = int(m.group(1)), int(m.group(2))
    # Nothing between the pods depends on etcd or on the agents' passes, and the
    # underlay is veths on one machine: any lost echo would be a real fault.
    assert (sent, received) == (320, 320), ping_log.read_text()[-300:]

    # A policy written after the outage reaches the kernel: a can no longer reach b,
    # while b still reaches a (so the network itself is fine).
    create(lab, DENY_TO_B)
    written = time.monotonic()
    wait_for(lambda: not ping_ok(lab, a, b_ip), timeout=10, what="the deny policy to stop a's pings")
    applied = time.monotonic() - written
    assert ping_ok(lab, b, a.ips[0].split("/")[0])
    print(f"{policy}: {received}/{sent} echoes through the outage; policy applied {applied:.2f} s after its write")


@pytest.mark.parametrize("policy", POLICIES)
def test_sigkilled_agent_restarts_without_touching_the_dataplane(make_lab, policy):
    lab, a, b = two_pods(make_lab, policy)
    create(lab, A_OUT)
    b_ip = b.ips[0].split("/")[0]
    receiver, recv_log = spawned(lab, b.netns, [sys.executable, "-c", STREAM, "recv", str(PORT)], "recv")
    wait_for(lambda: pods.exec_in_pod(lab, b.key, ["ss", "-Hltn", f"sport = :{PORT}"], capture_output=True,
                                      text=True).stdout.strip(), what="the receiver listening")
    # The policies allow the stream; wait until they are in both kernels (a is default-deny
    # for anything else once a-out selects it).
    wait_for(lambda: not ping_ok(lab, a, b_ip), what="a-out applied on node1")
    retrans = retransmitted(lab, a)
    sender, send_log = spawned(lab, a.netns, [sys.executable, "-c", STREAM, "send", str(PORT), b_ip, "12", "2000000"],
                               "send")
    time.sleep(2)

    node1 = lab.node("node1")
    monitor, monitor_log = spawned(lab, node1.netns, ["nft", "monitor"], "nft-monitor")
    time.sleep(0.5)  # nft has subscribed
    counters = iptables_counters(lab, "node1")
    sets = lab.exec("node1", ["ipset", "save"], capture_output=True, text=True).stdout
    since = {n: sessions_since(lab, n) for n in ("node1", "node2")}
    bird = bird_pid(lab, "node1")
    log_offset = len(agent_log(lab, "node1"))

    os.kill(lab.agent_pid("node1"), signal.SIGKILL)
    wait_for(lambda: lab.agent_pid("node1") is None, what="the agent to die")
    time.sleep(1)  # the stream goes on without an agent
    started = time.monotonic()
    lab.start_agent("node1")
    wait_for(lambda: readiness(lab, "node1") is None, timeout=20, what="the restarted agent ready")
    restart_seconds = time.monotonic() - started
    new_log = agent_log(lab, "node1")[log_offset:]
    first = re.search(r"pass 1 \((\w+)\) at revision \S+: (\d+) change\(s\)", new_log)
    assert first and first.groups() == ("sync", "0"), new_log[-2000:]
    assert f"BIRD pid {bird}, left running by an earlier agent, adopted" in new_log

    finished(lab, sender, timeout=30)
    finished(lab, receiver, timeout=10)
    sent, got = json.loads(send_log.read_text()), json.loads(recv_log.read_text())
    assert sent["error"] == "" and sent["sent"] == sent["acked"] == got["received"] > 10_000_000, (sent, got)
    assert got["max_gap"] < 1.0, got  # bytes kept flowing through the restart
    assert retransmitted(lab, a) == retrans  # and none was lost on the way

    # The kernel: nothing written. nft monitor printed no event...
    assert monitor_log.read_text() == "", monitor_log.read_text()[:2000]
    # ...the counters of every rule only grew (the stream's path among them)...
    if policy == "iptables":
        after = iptables_counters(lab, "node1")
        assert [rule for rule, packets in counters.items() if after.get(rule, -1) < packets] == []
        assert sum(1 for rule, packets in after.items() if "cali" in rule[1] and packets > counters[rule]) >= 5
    assert lab.exec("node1", ["ipset", "save"], capture_output=True, text=True).stdout == sets
    # ...and BGP did not notice: the same BIRD, no session restarted on either side.
    assert bird_pid(lab, "node1") == bird
    assert {n: sessions_since(lab, n) for n in ("node1", "node2")} == since

    # The monitor was listening all along: a policy change shows up in it.
    create(lab, DENY_TO_B.replace("deny-to-b", "deny-to-a").replace("app == 'b'", "app == 'a'"))
    wait_for(lambda: monitor_log.read_text(), timeout=10, what="nft monitor to print the next change")
    lab.stop(monitor)
    print(f"{policy}: agent restart to readiness {restart_seconds:.2f} s; stream {got}")
