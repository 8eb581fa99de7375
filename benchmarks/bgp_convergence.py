"""BGP convergence in bird mode: a new block claimed on one node, until its route is in
every other node's kernel. Beside it, in the same lab, the floor: BIRD alone carrying a
static route from that node to the others.

    .venv/bin/python benchmarks/bgp_convergence.py [--rounds 5] [--topologies mesh:3,mesh:20,rr:20]

For each topology a lab is built (``mesh:N``: N nodes, full node-to-node mesh; ``rr:N``:
N nodes, the first two route reflectors, mesh off), calico-node with BIRD on every node,
and removed afterwards. Each round, alternately:

* pycalico: calico-ipam claims a new /30 block on the last node (a client in ``rr``) in a
  pool made for the run (10.66.0.0/16, blockSize 30): the affinity goes to etcd, every
  agent's watch brings it, the origin's pass renders and reloads BIRD, BGP carries the
  route, the other BIRDs program their kernels. Timed from the start of the claim (its
  own etcd writes, reported apart) to the route on the last of the other nodes;
* the floor: a blackhole route added to the origin's BIRD by hand (a ``protocol static``
  appended to its bird_aggr.cfg, then ``configure`` on its socket): what BIRD and the
  kernels need, with no datastore, watch or pass in the way. Timed from the
  ``configure`` to the route on the last other node.

Routes are seen as they arrive: one netlink socket per node namespace, subscribed to
IPv4 route events (``proto bird`` only), all read by one ``select`` loop.
"""

from __future__ import annotations

import argparse
import ipaddress
import select
import socket
import statistics
import struct
import sys
import tempfile
import time
from pathlib import Path

from pycalico.core.lab import Lab, bgp
from pycalico.core.lab.netns import run_in_netns
from pycalico.core.lab.pods import with_datastore
from pycalico.plugins.routing.bird import control

RTMGRP_IPV4_ROUTE = 0x40
RTM_NEWROUTE = 24
RTA_DST = 1
RTPROT_BIRD = 12
POOL = "10.66.0.0/16"


def route_socket(ns: str) -> socket.socket:
    """A netlink socket in namespace ``ns`` that receives its IPv4 route changes."""

    def make() -> socket.socket:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        sock.bind((0, RTMGRP_IPV4_ROUTE))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        return sock

    return run_in_netns(ns, make)


def new_bird_routes(data: bytes):
    """The destinations of the RTM_NEWROUTE messages from BIRD in one netlink read."""
    offset = 0
    while offset + 16 <= len(data):
        length, kind = struct.unpack_from("=IH", data, offset)
        if length < 16:
            return
        if kind == RTM_NEWROUTE:
            body = offset + 16
            _family, dst_len, _, _, _, proto, _, _ = struct.unpack_from("=8B", data, body)
            pos = body + 12
            while proto == RTPROT_BIRD and pos + 4 <= offset + length:
                alen, atype = struct.unpack_from("=HH", data, pos)
                if alen < 4:
                    break
                if atype == RTA_DST:
                    yield f"{ipaddress.IPv4Address(data[pos + 4:pos + 8])}/{dst_len}"
                pos += (alen + 3) & ~3
        offset += (length + 3) & ~3


def wait_routes(socks: dict[str, socket.socket], cidr: str, timeout: float = 30.0) -> dict[str, float]:
    """When (perf_counter) ``cidr`` arrived from BIRD in each node's kernel."""
    seen: dict[str, float] = {}
    by_fd = {s.fileno(): name for name, s in socks.items()}
    deadline = time.perf_counter() + timeout
    while len(seen) < len(socks):
        left = deadline - time.perf_counter()
        if left <= 0:
            missing = sorted(set(socks) - set(seen))
            raise TimeoutError(f"{cidr} never reached {', '.join(missing)}")
        ready, _, _ = select.select(list(socks.values()), [], [], left)
        now = time.perf_counter()
        for sock in ready:
            name = by_fd[sock.fileno()]
            if cidr in new_bird_routes(sock.recv(1 << 16)) and name not in seen:
                seen[name] = now
    return seen


def drain(socks: dict[str, socket.socket]) -> None:
    for sock in socks.values():
        sock.setblocking(False)
        try:
            while sock.recv(1 << 16):
                pass
        except BlockingIOError:
            pass
        sock.setblocking(True)


def bird_dir(node) -> Path:
    return Path(node.config_path).parent / "bird"


def converged(lab: Lab, reflectors: int) -> bool:
    n = len(lab.nodes)
    for i, node in enumerate(lab.nodes):
        want = n - 1 if not reflectors or i < reflectors else reflectors
        info = bgp.node_bgp(lab, node)
        up = [s for s in info["sessions"] if s["info"].startswith("Established")]
        if len(up) != want or len(info["sessions"]) != want:
            return False
    return True


def create_pool(lab: Lab) -> None:
    from pycalico.core.resources import load_resources

    (pool,) = load_resources("apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: bench}\n"
                             f"spec: {{cidr: {POOL}, blockSize: 30}}\n")
    with_datastore(lab, lab.nodes[0], lambda ds: ds.create(pool))


def claim(lab: Lab, node, handle: str) -> str:
    """calico-ipam claims a new /30 block on ``node`` (4 addresses fill it); its CIDR."""
    from pycalico.plugins.ipam.calico_ipam import IPAM

    def run(ds):
        result = IPAM(ds, node.name).auto_assign(handle, num_v4=4, pools=["bench"])
        return str(ipaddress.ip_network(f"{result.v4[0].ip}/30", strict=False))

    return with_datastore(lab, node, run)


def floor_round(origin, cidr: str, socks) -> float:
    aggr = bird_dir(origin) / "bird_aggr.cfg"
    original = aggr.read_text()
    aggr.write_text(original + f"\nprotocol static bench_floor {{\n  ipv4;\n  route {cidr} blackhole;\n}}\n")
    sock = str(bird_dir(origin) / "bird.ctl")
    try:
        start = time.perf_counter()
        run_in_netns(origin.netns, lambda: control.configure(sock))
        seen = wait_routes(socks, cidr)
    finally:
        aggr.write_text(original)
        run_in_netns(origin.netns, lambda: control.configure(sock))
    return max(seen.values()) - start


def measure(kind: str, nodes: int, rounds: int, root: str) -> dict:
    reflectors = 2 if kind == "rr" else 0
    t = time.perf_counter()
    lab = Lab.up(f"bgp{kind}{nodes}", nodes=nodes, routing="bird", state_root=root, agent_timeout=300)
    try:
        if reflectors:
            bgp.setup_route_reflectors(lab, reflectors)
        create_pool(lab)
        deadline = time.monotonic() + 180
        while not converged(lab, reflectors):
            if time.monotonic() > deadline:
                raise TimeoutError("BGP sessions did not all come up")
            time.sleep(0.5)
        setup = time.perf_counter() - t
        origin, others = lab.nodes[-1], lab.nodes[:-1]
        socks = {n.name: route_socket(n.netns) for n in others}
        ours, floor, claims = [], [], []
        for r in range(rounds):
            drain(socks)
            floor.append(floor_round(origin, f"10.65.255.{4 * r}/30", socks))
            time.sleep(0.5)
            drain(socks)
            start = time.perf_counter()
            cidr = claim(lab, origin, f"bench-{r}")
            claims.append(time.perf_counter() - start)
            seen = wait_routes(socks, cidr)
            ours.append(max(seen.values()) - start)
            time.sleep(0.5)
        for s in socks.values():
            s.close()
        return {"setup": setup, "ours": ours, "floor": floor, "claims": claims}
    finally:
        lab.down()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--topologies", default="mesh:3,mesh:20,rr:20")
    args = parser.parse_args(argv)
    print(f"{'topology':<10} {'pycalico p50':>12} {'max':>8} {'after claim':>12} {'BIRD floor p50':>15} "
          f"{'max':>8} {'ratio':>6} {'lab up':>7}")
    with tempfile.TemporaryDirectory(prefix="bgpconv-") as root:
        for spec in args.topologies.split(","):
            kind, _, count = spec.partition(":")
            r = measure(kind, int(count), args.rounds, root)
            ours, floor = statistics.median(r["ours"]), statistics.median(r["floor"])
            after = statistics.median(o - c for o, c in zip(r["ours"], r["claims"]))
            print(f"{spec:<10} {ours * 1000:>10.0f}ms {max(r['ours']) * 1000:>6.0f}ms {after * 1000:>10.0f}ms "
                  f"{floor * 1000:>13.1f}ms {max(r['floor']) * 1000:>6.1f}ms {ours / floor:>5.0f}x "
                  f"{r['setup']:>6.0f}s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
