"""A new agent adopts the BIRD a SIGKILLed one left running, reloading it only when it
must. Each "agent" is a child process running the bird plugin's pass in a lab node's
namespace, then sleeping until it is SIGKILLed; BIRD's pid and its protocols are read
from the pid file and the control socket.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest

from pycalico.core.calc import Cache, compute
from pycalico.core.datastore import Snapshot
from pycalico.core.lab.netns import run_in_netns
from pycalico.core.resources import load_resources
from pycalico.plugins.routing.bird import Options, control, model, render
from pycalico.plugins.routing.bird.daemon import is_bird
from pycalico.plugins.routing.bird.speaker import install
from waiting import wait_for

pytestmark = pytest.mark.lab

AGENT = """
import sys, time
from pycalico.core.calc import Cache, compute
from pycalico.core.datastore import Snapshot
from pycalico.core.resources import load_resources
from pycalico.plugins.routing.bird import BirdRouting, Options
docs, node, config_dir = open(sys.argv[1]).read(), sys.argv[2], sys.argv[3]
cache = Cache()
cache.replace(Snapshot(1, tuple(load_resources(docs))))
options = Options(config_dir=config_dir, socket=config_dir + "/bird.ctl")
print("changes", BirdRouting().reconcile(compute(cache, node), options), flush=True)
time.sleep(3600)
"""


def docs(node, peers: list[str]) -> str:
    text = (f"apiVersion: projectcalico.org/v3\nkind: Node\nmetadata: {{name: {node.name}}}\n"
            f"spec: {{bgp: {{ipv4Address: {node.cidr}}}}}\n")
    for ip in peers:
        text += (f"---\napiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {{name: p{ip.replace('.', '-')}}}\n"
                 f"spec: {{peerIP: {ip}, asNumber: 65000}}\n")
    return text


class Agents:
    def __init__(self, lab):
        self.lab, self.node = lab, lab.nodes[0]
        self.dir = Path(self.node.config_path).parent / "bird"
        self.count = 0

    def run(self, text: str) -> str:
        """One agent's pass over ``text`` (it stays alive, as an agent does); its change lines."""
        self.count += 1
        source = self.lab.state_dir / f"docs-{self.count}.yaml"
        source.write_text(text)
        log = self.lab.state_dir / "logs" / f"agent-{self.count}.log"
        pid = self.lab.spawn(self.node.netns, [sys.executable, "-c", AGENT, str(source), self.node.name, str(self.dir)],
                             log, name=f"agent-{self.count}")
        self.pid = pid
        line = wait_for(lambda: next((ln for ln in log.read_text().splitlines() if ln.startswith("changes ")), None),
                        timeout=30, what=f"agent {self.count}'s pass")
        return line[len("changes "):]

    def kill(self) -> None:
        os.kill(self.pid, signal.SIGKILL)
        self.lab.stop(self.pid)

    def bird(self) -> int:
        pid = int((self.dir / "bird.pid").read_text().split()[0])
        assert is_bird(pid, str(self.dir / "bird.ctl"))
        return pid

    def protocols(self) -> set[str]:
        sock = str(self.dir / "bird.ctl")
        return {p.name for p in run_in_netns(self.node.netns, lambda: control.protocols(sock)) if p.proto == "BGP"}


def test_adopt_reload_only_when_needed_replace_when_hung(make_lab):
    lab = make_lab(nodes=1)
    agents = Agents(lab)
    node = lab.nodes[0]
    one, two = docs(node, ["203.0.113.9"]), docs(node, ["203.0.113.9", "203.0.113.10"])

    lines = agents.run(one)
    assert "bird started (pid" in lines
    bird = agents.bird()
    agents.kill()

    # Same state: BIRD adopted, nothing written or reloaded.
    assert agents.run(one) == "[]"
    assert agents.bird() == bird
    agents.kill()

    # An agent died between installing new files and reloading BIRD: the next one finds
    # the files right but BIRD not running them (bird.loaded says so), and reloads it.
    cache = Cache()
    cache.replace(Snapshot(1, tuple(load_resources(two))))
    install(agents.dir, render.render(model.build(compute(cache, node.name), Options().secrets_dir)))
    assert agents.protocols() == {"Global_203_0_113_9"}
    assert agents.run(two) == "['bird reconfigured']"
    assert agents.bird() == bird
    assert agents.protocols() == {"Global_203_0_113_9", "Global_203_0_113_10"}
    agents.kill()

    # A BIRD that no longer answers (stopped) is ended and replaced.
    os.kill(bird, signal.SIGSTOP)
    lines = agents.run(two)
    assert "bird started (pid" in lines and agents.bird() != bird
    assert not is_bird(bird, str(agents.dir / "bird.ctl"))
    assert agents.protocols() == {"Global_203_0_113_9", "Global_203_0_113_10"}
