"""CalicoNodeStatus end to end: a 2-node lab in bird mode, calico-node and BIRD on each
node, the request created and read back with calicoctl as a user would."""

from __future__ import annotations

import threading

import pytest
import yaml

from pycalico.core.lab import bgp, pods
from pycalico.core.lab.pods import with_datastore
from waiting import wait_for

pytestmark = pytest.mark.lab

REQUEST = """\
apiVersion: projectcalico.org/v3
kind: CalicoNodeStatus
metadata:
  name: node1-bgp
spec:
  node: node1
  classes: [Agent, BGP, Routes]
  updatePeriodSeconds: 1
"""


def calicoctl(lab, *args: str, stdin: str | None = None) -> str:
    done = lab.exec("node1", ["calicoctl", *args], input=stdin, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout


def status(lab) -> dict:
    return yaml.safe_load(calicoctl(lab, "get", "caliconodestatus", "node1-bgp", "-o", "yaml")).get("status") or {}


def test_node1_reports_its_bird_its_mesh_session_and_the_route_to_node2s_block(make_lab):
    lab = make_lab(nodes=2, routing="bird")
    pods.add_pod(lab, "node2", "default/p2")  # gives node2 a block, announced to node1
    block = wait_for(lambda: next((r["dst"] for r in bgp.node_bgp(lab, lab.node("node1"))["routes"]
                                   if r.get("via") == "198.51.100.12"), None), what="node2's block on node1")

    assert calicoctl(lab, "create", "-f", "-", stdin=REQUEST) == \
        "Successfully created 1 'CalicoNodeStatus' resource(s)\n"
    assert calicoctl(lab, "get", "caliconodestatus", "-o", "wide").split() == [
        "NAME", "NODE", "CLASSES", "node1-bgp", "node1", "Agent,BGP,Routes"]

    def filled():
        s = status(lab)
        routes = s.get("routes", {}).get("routesV4", [])
        return s if any(r["destination"] == block for r in routes) and s["bgp"]["numberEstablishedV4"] == 1 else None

    s = wait_for(filled, timeout=15, what="node1's status with the route to node2's block")
    assert s["agent"]["birdV4"]["state"] == "Ready" and s["agent"]["birdV4"]["routerID"] == "198.51.100.11"
    (peer,) = s["bgp"]["peersV4"]
    assert (peer["peerIP"], peer["type"], peer["state"]) == ("198.51.100.12", "NodeMesh", "Established")
    assert s["bgp"]["numberNotEstablishedV4"] == 0 and "peersV6" not in s["bgp"]
    (learned,) = [r for r in s["routes"]["routesV4"] if r["destination"] == block]
    assert learned == {"type": "FIB", "destination": block, "gateway": "198.51.100.12", "interface": "eth0",
                       "learnedFrom": {"sourceType": "NodeMesh", "peerIP": "198.51.100.12"}}
    # As in Calico's example: the default route BIRD learned from the kernel, the subnet from the interface.
    others = {r["destination"]: (r["gateway"], r["learnedFrom"]["sourceType"]) for r in s["routes"]["routesV4"]}
    assert others["0.0.0.0/0"] == ("198.51.100.1", "Kernel") and others["198.51.100.0/24"] == ("N/A", "Direct")

    # Deleted: the agent stops reporting; nothing is written under the kind any more.
    calicoctl(lab, "delete", "caliconodestatus", "node1-bgp")
    log = lab.state_dir / "logs" / "calico-node-node1.log"
    wait_for(lambda: "CalicoNodeStatus node1-bgp: no longer for this node; its reports stop" in log.read_text(),
             timeout=10, what="node1's agent to drop the request")

    def writes_within(seconds: float):
        def watch(ds):
            kinds = ["CalicoNodeStatus"]
            revision = ds.snapshot(kinds).revision
            stop = threading.Event()
            threading.Timer(seconds, stop.set).start()
            return list(ds.watch(revision, stop, kinds))

        return with_datastore(lab, "node1", watch)

    assert writes_within(3.0) == []
