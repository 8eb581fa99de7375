"""CalicoNodeStatus: the resource through the codec, its validation, where the datastores
keep it, the calicoctl kind, and which plugin answers for BGP status."""

from __future__ import annotations

from pathlib import Path

import pytest

from pycalico.core import config as cfg
from pycalico.core.ctl import kinds
from pycalico.core.nodestatus import fill
from pycalico.core.plugins import Plugins
from pycalico.core.resources import ResourceError, from_dict, load_resources, to_dict
from pycalico.core.resources.nodestatus import (
    NO_BGP_DAEMON,
    CalicoNodeBGPRouteStatus,
    CalicoNodeStatus,
    CalicoNodeStatusStatus,
)
from pycalico.plugins.datastore.etcd import keys
from pycalico.plugins.datastore.kubernetes import crds

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "manifests" / "caliconodestatus.yaml"


def load(spec: str) -> CalicoNodeStatus:
    (res,) = load_resources(f"apiVersion: projectcalico.org/v3\nkind: CalicoNodeStatus\nmetadata: {{name: s}}\n"
                            f"spec: {spec}\n")
    return res


def problems(spec: str) -> list[str]:
    with pytest.raises(ResourceError) as err:
        load(spec)
    return err.value.lines


def test_a_filled_status_round_trips_with_calicos_keys():
    _, filled = load_resources(SAMPLE.read_text())
    doc = to_dict(filled)
    assert from_dict(doc) == filled
    status = doc["status"]
    assert status["agent"]["birdV4"]["routerID"] == "198.51.100.12"
    assert status["bgp"]["peersV4"][0] == {"peerIP": "198.51.100.11", "type": "NodeMesh", "state": "Established",
                                          "since": "22:25:08.168"}
    assert status["bgp"]["numberNotEstablishedV6"] == 0
    assert status["routes"]["routesV4"][0]["learnedFrom"] == {"sourceType": "NodeMesh", "peerIP": "198.51.100.11"}
    assert doc["spec"] == {"node": "node2", "classes": ["BGP", "Routes"], "updatePeriodSeconds": 0}


def test_each_bad_field_is_named():
    assert problems("{node: Node_1, classes: [Agent, Bgp, Agent], updatePeriodSeconds: 86401}") == [
        ("CalicoNodeStatus \"s\": spec.node: 'Node_1' is not a valid name: use lower case alphanumeric characters, "
         "'-' or '.', starting and ending with an alphanumeric character"),
        "CalicoNodeStatus \"s\": spec.classes[1]: must be one of Agent, BGP, Routes, got 'Bgp'",
        "CalicoNodeStatus \"s\": spec.updatePeriodSeconds: must be between 0 and 86400, got 86401",
        "CalicoNodeStatus \"s\": spec.classes[2]: 'Agent' is listed twice: classes must be unique",
    ]
    assert problems("{classes: []}") == [
        'CalicoNodeStatus "s": spec.node: is required',
        'CalicoNodeStatus "s": spec.classes: is required',
        'CalicoNodeStatus "s": spec.updatePeriodSeconds: is required (0 to 86400; 0 turns updates off)',
    ]
    assert problems("{node: n, classes: [BGP], updatePeriodSeconds: -1, period: 5}") == [
        'CalicoNodeStatus "s": spec.period: unknown key; valid keys: node, classes, updatePeriodSeconds',
        'CalicoNodeStatus "s": spec.updatePeriodSeconds: must be between 0 and 86400, got -1',
    ]
    assert load("{node: n, classes: [Routes], updatePeriodSeconds: 0}").spec.update_period_seconds == 0


def test_it_is_cluster_wide_in_both_datastores():
    assert keys.resource_key("CalicoNodeStatus", "s") == "/calico/resources/v3/projectcalico.org/caliconodestatuses/s"
    assert keys.parse("/calico/resources/v3/projectcalico.org/caliconodestatuses/s") == ("CalicoNodeStatus", None, "s")
    crd = crds.crd(crds.codec.kind_info("CalicoNodeStatus"))
    assert crd["metadata"]["name"] == "caliconodestatuses.crd.projectcalico.org"
    assert crd["spec"]["scope"] == "Cluster" and crd["spec"]["names"]["singular"] == "caliconodestatus"
    bgp = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]["bgp"]
    # Calico's Go type serializes the four counts always, so its CRD requires them.
    assert bgp["required"] == ["numberEstablishedV4", "numberEstablishedV6", "numberNotEstablishedV4",
                               "numberNotEstablishedV6"]


def test_calicoctl_knows_it_by_calicos_names_and_columns():
    for name in ("caliconodestatus", "caliconodestatuses", "nodestatus", "NodeStatuses"):
        assert kinds.lookup(name).kind == "CalicoNodeStatus"
    spec = kinds.managed("CalicoNodeStatus")
    assert (spec.headings, spec.wide, spec.namespaced) == (("NAME", "NODE"), ("NAME", "NODE", "CLASSES"), False)
    doc = to_dict(load("{node: node1, classes: [Agent, BGP], updatePeriodSeconds: 5}"))
    assert [spec.columns[c](doc, str) for c in spec.wide] == ["s", "node1", "Agent,BGP"]


def test_fill_replaces_the_parts_asked_for_only():
    old = CalicoNodeStatusStatus(last_updated="2026-11-28T22:25:09Z", routes=CalicoNodeBGPRouteStatus(routes_v4=()))
    filled = fill(old, NO_BGP_DAEMON, ["Agent", "BGP"])
    assert (filled.agent, filled.bgp) == (NO_BGP_DAEMON.agent, NO_BGP_DAEMON.bgp)
    assert (filled.routes, filled.last_updated) == (old.routes, old.last_updated), "kept, as Calico keeps them"
    assert fill(None, NO_BGP_DAEMON, []) == CalicoNodeStatusStatus()


def plugins(tmp_path, routing: str) -> Plugins:
    text = f'node_name = "node1"\n[routing]\ntype = "{routing}"\n'
    if routing == "bird":
        text += f'[routing.bird]\nconfig_dir = "{tmp_path}"\nsocket = "{tmp_path / "bird.ctl"}"\n'
    return Plugins.load(cfg.parse(text), configure=False, slots=("routing",))


def test_the_bird_plugin_answers_for_bgp_and_nothing_else_does(tmp_path):
    # No BIRD on the socket: what Calico reports when BGP is off (a real BIRD answers in
    # tests/integration/test_nodestatus_bird.py).
    assert plugins(tmp_path, "bird").bgp_status(["Agent", "BGP", "Routes"]) == NO_BGP_DAEMON
    assert plugins(tmp_path, "vxlan").bgp_status(["Agent"]) is None
