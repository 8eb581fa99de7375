"""calicoctl ipam as an operator runs it: the installed executable in a subprocess,
against a real etcd, with allocations made by other processes through the calico-ipam
library, some of which are killed half way through an IPAM operation (``os._exit`` at a
named checkpoint between two writes): check finds what they left, release
--from-report cleans it up, and check is clean again."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import attrs
import pytest

from pycalico.core.resources import load_resources
from pycalico.core.resources.ipam import BlockAffinity, IPAMHandle
from pycalico.plugins.ipam.calico_ipam import IPAM

CALICOCTL = Path(sys.executable).with_name("calicoctl")
CALICO_VARS = ("CALICO_CONFIG", "DATASTORE_TYPE", "ETCD_ENDPOINTS", "ETCD_CA_CERT_FILE", "ETCD_CERT_FILE",
               "ETCD_KEY_FILE", "ETCD_USERNAME", "ETCD_PASSWORD", "KUBECONFIG")

CHILD = r"""
import json, os, sys
spec = json.loads(sys.argv[1])
from pycalico.plugins.datastore.etcd import Options, connect
from pycalico.plugins.ipam.calico_ipam import IPAM

def checkpoint(name):
    if name == spec.get("die_at"):
        sys.stdout.flush()
        os._exit(17)

ipam = IPAM(connect(Options(endpoints=tuple(spec["endpoints"]), timeout_seconds=10)), spec["node"],
            checkpoint=checkpoint)
if spec.get("release"):
    ipam.release_by_handle(spec["release"])
out = [str(i.ip) for n in range(spec.get("count", 0))
       for i in ipam.auto_assign(f"{spec['prefix']}-{n}", {"pod": f"{spec['prefix']}-{n}", "namespace": "default"}).all]
print(json.dumps(out))
"""


@pytest.fixture
def calicoctl(etcd_server, tmp_path):
    """``calicoctl("ipam", "check", via="env"|"config")`` -> CompletedProcess."""
    assert CALICOCTL.exists(), f"{CALICOCTL} is not installed (pip install -e .)"
    config = tmp_path / "calico.toml"
    config.write_text(f'[datastore]\ntype = "etcd"\n\n[datastore.etcd]\nendpoints = ["{etcd_server.endpoint}"]\n')
    base = {k: v for k, v in os.environ.items() if k not in CALICO_VARS}

    def run(*args: str, via: str = "env"):
        environ = dict(base)
        argv = [str(CALICOCTL), *args]
        if via == "env":
            environ["ETCD_ENDPOINTS"] = etcd_server.endpoint
        else:
            argv += ["--config", str(config)]
        began = time.monotonic()
        done = subprocess.run(argv, capture_output=True, text=True, env=environ, timeout=60)
        run.durations.append(time.monotonic() - began)
        assert "Traceback" not in done.stderr, done.stderr
        return done

    run.durations = []
    return run


def child(etcd_server, **spec):
    """A process allocating through the library; ``die_at`` ends it there (exit 17)."""
    done = subprocess.run([sys.executable, "-c", CHILD, json.dumps({"endpoints": etcd_server.endpoints, **spec})],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    return done.returncode, (json.loads(done.stdout) if done.returncode == 0 else None), done.stderr


def create(store, text):
    (resource,) = load_resources(text)
    return store.create(resource)


def setup_cluster(store, cidr="10.80.0.0/24", ready=True, nodes=("node-1", "node-2")):
    create(store, "apiVersion: projectcalico.org/v3\nkind: ClusterInformation\nmetadata: {name: default}\n"
                  f"spec: {{clusterGUID: 0f3c, clusterType: 'k8s,bgp', datastoreReady: {str(ready).lower()}}}\n")
    create(store, f"apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {{name: pool}}\nspec: {{cidr: {cidr}}}\n")
    for name in nodes:
        create(store, f"apiVersion: projectcalico.org/v3\nkind: Node\nmetadata: {{name: {name}}}\n")


def wep(store, pod, ip, node="node-1"):
    create(store, f"""
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata: {{name: {node}-k8s-{pod}-eth0, namespace: default}}
spec: {{node: {node}, orchestrator: k8s, pod: {pod}, endpoint: eth0, interfaceName: cali{abs(hash(pod)) % 10**11:011d},
        ipNetworks: [{ip}/32]}}
""")


def lock(store, locked=True):
    info = store.get("ClusterInformation", "default")
    store.update(attrs.evolve(info, spec=attrs.evolve(info.spec, datastore_ready=not locked)))


def problems(out: str) -> int:
    last = out.splitlines()[-1]
    assert last.startswith("Check complete; found "), out
    return int(last.split()[3])


def test_show_through_the_executable(calicoctl, etcd_server, etcd_datastore):
    setup_cluster(etcd_datastore)
    code, ips, err = child(etcd_server, node="node-1", prefix="web", count=10)
    assert code == 0, err
    for via in ("env", "config"):
        done = calicoctl("ipam", "show", via=via)
        assert (done.returncode, done.stderr) == (0, "")
        assert done.stdout.splitlines()[3] == (
            "| IP Pool  | 10.80.0.0/24 |       256 |    10 (4%) |       0 (0%) | 246 (96%) |      0 (0%) |")
    done = calicoctl("ipam", "show", "--show-blocks")
    assert done.stdout.splitlines()[4].startswith("| Block    | 10.80.0.")
    done = calicoctl("ipam", "show", "--ip", ips[0])
    assert done.stdout.startswith(f"IP {ips[0]} is in use\nHandle ID: web-0\nActive Owner Attributes:\n")
    done = calicoctl("ipam", "configure", "--strictaffinity=true")
    assert (done.returncode, done.stdout) == (0, "Successfully set StrictAffinity to: true\n")
    assert "| StrictAffinity     | true  |" in calicoctl("ipam", "show", "--show-configuration").stdout
    done = calicoctl("ipam", "release", "--ip", ips[0])
    assert done.stdout == f"Successfully released IP address {ips[0]}\n"
    done = calicoctl("ipam", "release", "--ip", ips[0])
    assert (done.returncode, done.stderr) == (1, f"IP address {ips[0]} is not assigned\n")


def test_lost_pods_and_killed_allocations_are_found_and_released(calicoctl, etcd_server, etcd_datastore, tmp_path):
    """A node's pods, some of whose DELs never came; two allocations killed half way;
    an operator locks the datastore, checks, releases from the report, checks again."""
    store = etcd_datastore
    setup_cluster(store)
    code, ips, err = child(etcd_server, node="node-1", prefix="pod", count=6)
    assert code == 0, err
    for i, ip in enumerate(ips[:4]):  # pods 4 and 5 went away without a CNI DEL
        wep(store, f"pod-{i}", ip)
    # Killed after counting the handle, before writing the block: a handle with no address.
    code, _, err = child(etcd_server, node="node-1", prefix="killed", count=1, die_at="handle-counted")
    assert code == 17, err
    # Killed claiming a new block on node-2: a pending affinity, no block.
    code, _, err = child(etcd_server, node="node-2", prefix="claim", count=1, die_at="affinity-pending")
    assert code == 17, err

    done = calicoctl("ipam", "check")
    assert done.returncode == 0, done.stderr
    assert "Found 2 IPs that are allocated in IPAM but not actually in use." in done.stdout
    assert "Found 1 handles with no matching IPs (and 6 handles with matches)." in done.stdout
    assert "Found 1 inconsistencies in IPAM blocks, affinities and handles." in done.stdout
    assert problems(done.stdout) == 4

    lock(store)
    report = tmp_path / "report.json"
    done = calicoctl("ipam", "check", "--show-problem-ips", "-o", str(report))
    assert f"  {ips[4]} leaked; attrs Main:pod-4 Extra:namespace=default,node=node-1,pod=pod-4," in done.stdout
    doc = json.loads(report.read_text())
    assert doc["datastoreLocked"] is True and [h["ID"] for h in doc["leakedHandles"]] == ["killed-0"]
    assert [p["kind"] for p in doc["inconsistencies"]] == ["affinity-without-block"]

    done = calicoctl("ipam", "release", "--from-report", str(report), via="config")
    assert (done.returncode, done.stderr) == (0, "")
    lines = done.stdout.splitlines()
    assert lines[:7] == [
        "Releasing 2 old IPs...",
        "Released 2 IPs successfully",
        "Deleting 1 handles...",
        "Key: '.' = Deleted OK; 'x' = skip, handle missing/changed.",
        ".",
        "Released 1 handles; 0 skipped; 0 errors.",
        "Repairing 1 IPAM inconsistencies...",
    ]
    assert lines[7].startswith("  deleted node-2's pending affinity for ")
    assert lines[8:] == ["Repaired 1 inconsistencies; 0 no longer found.", "You may now unlock the data store."]
    lock(store, locked=False)

    done = calicoctl("ipam", "check")
    assert problems(done.stdout) == 0, done.stdout
    assert "Found 0 handles with no matching IPs (and 4 handles with matches)." in done.stdout
    ipam = IPAM(store, "node-1")
    assert ipam.ips_by_handle("pod-4") == [] and ipam.ips_by_handle("pod-0") != []
    assert [h.metadata.name for h in store.list(IPAMHandle.KIND).items] == [f"pod-{i}" for i in range(4)]
    assert {a.spec.node for a in store.list(BlockAffinity.KIND).items} == {"node-1"}
    assert ipam.check().ok


def test_a_report_taken_before_locking_is_refused(calicoctl, etcd_server, etcd_datastore, tmp_path):
    setup_cluster(etcd_datastore)
    code, _, err = child(etcd_server, node="node-1", prefix="lost", count=2)
    assert code == 0, err
    report = tmp_path / "early.json"
    assert calicoctl("ipam", "check", "-o", str(report)).returncode == 0
    done = calicoctl("ipam", "release", "--from-report", str(report))
    assert (done.returncode, done.stderr) == (
        1, "data store is not locked. Either lock the data store, or re-run with --force\n")
    lock(etcd_datastore)
    done = calicoctl("ipam", "release", "--from-report", str(report))
    assert done.returncode == 1 and done.stderr.startswith("the provided reports are all stale")
    assert IPAM(etcd_datastore, "node-1").ips_by_handle("lost-0") != []
    # A second report, newer: only what both call leaked goes.
    late = tmp_path / "late.json"
    code, _, err = child(etcd_server, node="node-1", prefix="later", count=1)
    assert code == 0, err
    calicoctl("ipam", "check", "-o", str(late))
    done = calicoctl("ipam", "release", "--from-report", str(report), "--from-report", str(late))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[:2] == ["Releasing 2 old IPs...", "Released 2 IPs successfully"]
    assert IPAM(etcd_datastore, "node-1").ips_by_handle("later-0") != []  # leaked only in the later report


def test_crash_while_releasing(calicoctl, etcd_server, etcd_datastore, tmp_path):
    """Killed after writing the block and before lowering the handle: the address is
    free, the handle still counts it; the report names the handle, release deletes it."""
    store = etcd_datastore
    setup_cluster(store, ready=False)
    code, ips, err = child(etcd_server, node="node-1", prefix="victim", count=1)
    assert code == 0, err
    code, _, err = child(etcd_server, node="node-1", prefix="none", release="victim-0", die_at="block-released")
    assert code == 17, err
    report = tmp_path / "r.json"
    done = calicoctl("ipam", "check", "-o", str(report))
    assert "Found 1 handles with no matching IPs (and 0 handles with matches)." in done.stdout
    assert problems(done.stdout) == 1
    done = calicoctl("ipam", "release", "--from-report", str(report))
    assert "Released 1 handles; 0 skipped; 0 errors." in done.stdout
    assert problems(calicoctl("ipam", "check").stdout) == 0
    assert ips


def test_startup_cost(calicoctl, etcd_datastore):
    """Not a benchmark: each ipam command stays quick enough to script."""
    setup_cluster(etcd_datastore)
    calicoctl.durations.clear()
    for args in (["ipam", "show"], ["ipam", "check"], ["ipam", "show", "--show-configuration"]):
        assert calicoctl(*args).returncode == 0
    assert max(calicoctl.durations) < 5.0, calicoctl.durations


def test_the_same_commands_on_the_kubernetes_datastore(kdd_datastore, kdd_kubeconfig, tmp_path):
    """The commands only use the datastore interface: with KDD (the API server stand-in)
    the records are CRDs, the texts the same."""
    store = kdd_datastore
    setup_cluster(store, cidr="10.81.0.0/24", ready=False, nodes=())  # KDD: Nodes are Kubernetes'
    store.api.request("POST", "/api/v1/nodes", body={"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-1"}})
    ipam = IPAM(store, "node-1")
    lost = [str(ipam.auto_assign(f"lost-{i}", {"pod": f"lost-{i}", "namespace": "default"}).v4[0].ip)
            for i in range(3)]
    environ = {k: v for k, v in os.environ.items() if k not in CALICO_VARS}
    environ.update(DATASTORE_TYPE="kubernetes", KUBECONFIG=str(kdd_kubeconfig))

    def run(*args):
        done = subprocess.run([str(CALICOCTL), "ipam", *args], capture_output=True, text=True, env=environ,
                              timeout=60)
        assert "Traceback" not in done.stderr, done.stderr
        return done

    assert run("show").stdout.splitlines()[3] == (
        "| IP Pool  | 10.81.0.0/24 |       256 |     3 (1%) |       0 (0%) | 253 (99%) |      0 (0%) |")
    report = tmp_path / "r.json"
    done = run("check", "-o", str(report))
    assert problems(done.stdout) == 3, done.stdout
    done = run("release", "--from-report", str(report))
    assert done.stdout.splitlines()[:2] == ["Releasing 3 old IPs...", "Released 3 IPs successfully"], done.stderr
    assert problems(run("check").stdout) == 0
    assert all(ipam.ips_by_handle(f"lost-{i}") == [] for i in range(3)) and lost
