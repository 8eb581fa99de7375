"""Real BIRD 2 daemons in two network namespaces joined by a veth, for tests of what
BIRD says on its control socket.

Node A has 198.51.100.11/24 and fd00:1::1/64, node B 198.51.100.12/24 and .13/24; each
runs a BIRD with the configuration the test gives. Everything is removed on exit, also
when the test fails.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pycalico.core.lab import netns
from pycalico.plugins.routing.bird import control
from tests.waiting import wait_for


# Node A's peers that are not plain Calico sessions: an IPv6 one that never answers (no
# fd00:1::2 exists) and one whose name is not Calico's (nothing listens on its port).
ODD_PEERS = """\
protocol bgp Node_fd00_1__2 {
  local fd00:1::1 as 64512; neighbor fd00:1::2 as 64512; ipv6 { import none; export none; };
}
protocol bgp Other {
  local 198.51.100.11 as 64512; neighbor 198.51.100.12 port 1791 as 64512; ipv4 { import none; export none; };
}
"""


class Bird:
    def __init__(self, ns: str, directory: Path, config: str):
        directory.mkdir()
        self.ns, self.config_file, self.socket = ns, directory / "bird.cfg", directory / "bird.ctl"
        self.config_file.write_text(config)
        self.log = (directory / "bird.log").open("wb")
        self.proc = subprocess.Popen(
            netns.exec_argv(ns, ["bird", "-f", "-s", str(self.socket), "-c", str(self.config_file)]),
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT)

    def end(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.log.close()


@contextmanager
def two_birds(root: Path, a_config: str, b_config: str, tag: str = "pcbc") -> Iterator[tuple[Bird, Bird]]:
    """Nodes A and B, each with its BIRD answering; ``tag`` starts the namespaces' names."""
    base = f"{tag}{os.getpid()}"
    a, b = f"{base}a", f"{base}b"
    made: list[str] = []
    running: list[Bird] = []
    try:
        for ns in (a, b):
            netns.add(ns)
            made.append(ns)
        netns.add_veth(a, "eth0", b, "eth0")
        for ns, cidrs in ((a, ["198.51.100.11/24"]), (b, ["198.51.100.12/24", "198.51.100.13/24"])):
            for cidr in cidrs:
                netns.add_addr(ns, "eth0", cidr)
            netns.link_up(ns, "eth0")
            netns.link_up(ns, "lo")
        subprocess.run(netns.exec_argv(a, ["ip", "-6", "addr", "add", "fd00:1::1/64", "dev", "eth0", "nodad"]),
                       check=True)
        running.append(Bird(a, root / "a", a_config))
        running.append(Bird(b, root / "b", b_config))
        for bird in running:
            wait_for(lambda b=bird: control.ready(b.socket), timeout=10, what=f"BIRD in {bird.ns} answering")
        yield running[0], running[1]
    finally:
        for bird in running:
            bird.end()
        for ns in made:
            netns.delete(ns)
