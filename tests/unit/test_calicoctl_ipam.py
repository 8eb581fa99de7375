"""calicoctl ipam in-process against a real etcd: Calico's tables and texts for show,
check, release and configure, with allocations made through the calico-ipam library,
workload endpoints and node tunnel addresses written through the etcd plugin, and the
leaks a lost DEL or a crash between two IPAM writes leaves behind."""

from __future__ import annotations

import io
import json
import os

import attrs
import pytest

from pycalico.core.ctl.cli import Context
from pycalico.core.ctl.ipam import render_table
from pycalico.core.ctl.main import main
from pycalico.core.ctl.version import client_version
from pycalico.core.resources import load_resources
from pycalico.core.resources.ipam import BlockAffinity, IPAMConfig, IPAMHandle, IPAMHandleSpec
from pycalico.core.resources.meta import ObjectMeta
from pycalico.plugins.ipam.calico_ipam import IPAM

GUID = "5a0cb2b4e5ff4f8ab0a4f2e5b0c2d1e9"


class Crash(BaseException):
    """Stands for the process dying at a checkpoint (BaseException: nothing catches it)."""


def crash_at(point):
    def checkpoint(name):
        if name == point:
            raise Crash(name)

    return checkpoint


@attrs.define
class Run:
    code: int
    out: str
    err: str


@pytest.fixture
def store(etcd_datastore):
    return etcd_datastore


@pytest.fixture
def ctl(etcd_server, etcd_connect):
    """``ctl("show", "--show-blocks")`` runs ``calicoctl ipam show --show-blocks``; every
    run opens its own connection (calicoctl closes it), as the executable does."""

    def run(*args: str) -> Run:
        out, err = io.StringIO(), io.StringIO()
        context = Context(stdout=out, stderr=err, env={},
                          open_datastore=lambda path, env: etcd_connect(etcd_server.endpoints))
        code = main(["ipam", *args], context)
        return Run(code, out.getvalue(), err.getvalue())

    return run


def create(store, text: str):
    (resource,) = load_resources(text)
    return store.create(resource)


def pool(store, name="p1", cidr="10.65.0.0/24", extra=""):
    return create(store, f"apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {{name: {name}}}\n"
                         f"spec: {{cidr: {cidr}{extra}}}\n")


def cluster_info(store, ready=True):
    return create(store, "apiVersion: projectcalico.org/v3\nkind: ClusterInformation\nmetadata: {name: default}\n"
                         f"spec: {{clusterGUID: {GUID}, clusterType: 'k8s,bgp', datastoreReady: {str(ready).lower()}}}\n")


def lock(store, locked=True):
    """``calicoctl datastore migrate lock``: datastoreReady false (a new revision)."""
    info = store.get("ClusterInformation", "default")
    return store.update(attrs.evolve(info, spec=attrs.evolve(info.spec, datastore_ready=not locked)))


def wep(store, name, ip, node="node-1", namespace="default"):
    return create(store, f"""
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata: {{name: {node}-k8s-{name}-eth0, namespace: {namespace}}}
spec: {{node: {node}, orchestrator: k8s, pod: {name}, endpoint: eth0, interfaceName: cali{abs(hash(name)) % 10**11:011d},
        ipNetworks: [{ip}/32]}}
""")


def node(store, name, **spec):
    body = ", ".join(f"{k}: {v}" for k, v in spec.items())
    return create(store, f"apiVersion: projectcalico.org/v3\nkind: Node\nmetadata: {{name: {name}}}\nspec: {{{body}}}\n")


def assign(store, node_name, handle, pod=None, **kw):
    attrs_ = {"pod": pod or handle, "namespace": "default"} if pod is not False else {}
    (iface,) = IPAM(store, node_name, **kw).auto_assign(handle, attrs_).v4
    return str(iface.ip)


def tail(text: str, start: str) -> list[str]:
    lines = text.splitlines()
    return lines[lines.index(start):]


# --- the command surface -----------------------------------------------------------------------


def test_usage_help_and_unknown_subcommands(ctl):
    run = ctl()
    assert run.code == 1 and run.out == ""
    assert run.err == ("Usage:\n  calicoctl ipam <command> [<args>...]\n"
                       "Invalid option: 'calicoctl ipam'. Use flag '--help' to read about a specific subcommand.\n")
    run = ctl("--help")
    assert run.code == 0 and run.out.startswith("Usage:\n  calicoctl ipam <command> [<args>...]\n\n    check ")
    for command in ("show", "check", "release", "configure"):
        run = ctl(command, "--help")
        assert run.code == 0 and run.out.startswith(f"Usage:\n  calicoctl ipam {command}"), run.out
    run = ctl("split", "2")  # not implemented: Calico's default branch prints the usage
    assert run.code == 0 and run.out.startswith("Usage:\n  calicoctl ipam <command>")
    run = ctl("show", "--ip=10.0.0.1", "--show-blocks")
    assert run.code == 1 and "Invalid option: 'calicoctl ipam show --ip=10.0.0.1 --show-blocks'" in run.err
    run = ctl("release", "--from-report")
    assert run.code == 1 and run.err.startswith("Usage:\n  calicoctl ipam release")


def test_main_lists_ipam(ctl):
    out = io.StringIO()
    assert main(["--help"], Context(stdout=out)) == 0
    assert "    ipam         IP address management.\n" in out.getvalue()


def test_render_table_is_go_prettys_default_style():
    assert render_table(["A", "LONGER"], [["x", "1"], ["yy", "22"]], right=(1,)) == (
        "+----+--------+\n"
        "| A  | LONGER |\n"
        "+----+--------+\n"
        "| x  |      1 |\n"
        "| yy |     22 |\n"
        "+----+--------+\n"
    )
    assert render_table(["A"], []) == "+---+\n| A |\n+---+\n+---+\n"


# --- show --------------------------------------------------------------------------------------


def test_show_utilization_with_reservations_cooling_and_blocks(ctl, store):
    pool(store, "p1", "10.65.0.0/24")
    pool(store, "p2", "fd00:65::/120", ", blockSize: 122")
    create(store, "apiVersion: projectcalico.org/v3\nkind: IPReservation\nmetadata: {name: r}\n"
                  "spec: {reservedCIDRs: [10.65.0.0/30]}\n")
    create(store, "apiVersion: projectcalico.org/v3\nkind: IPAMConfiguration\nmetadata: {name: default}\n"
                  "spec: {strictAffinity: false, autoAllocateBlocks: true, ipCooldownSeconds: 600}\n")
    ipam = IPAM(store, "node-1")
    got = [ipam.auto_assign(f"h{i}", {"pod": f"p{i}", "namespace": "default"}, num_v6=1 if i == 0 else 0)
           for i in range(6)]
    ipam.release_by_handle("h5")  # cooling down for 10 minutes
    v4_block = str(got[0].v4[0].network)
    v6_block = str(got[0].v6[0].network)
    reserved_in_block = 4 if v4_block == "10.65.0.0/26" else 0

    run = ctl("show")
    assert run.code == 0 and run.err == ""
    assert run.out == render_table(
        ["GROUPING", "CIDR", "IPS TOTAL", "IPS IN USE", "IPS RESERVED", "IPS FREE", "IPS COOLING"],
        [["IP Pool", "10.65.0.0/24", "256", "6 (2%)", "4 (2%)", "246 (96%)", "1 (0%)"],
         ["IP Pool", "fd00:65::/120", "256", "1 (0%)", "0 (0%)", "255 (100%)", "0 (0%)"]],
        right=(2, 3, 4, 5, 6))
    run = ctl("show", "--show-blocks")
    free = 64 - 6 - reserved_in_block
    assert run.out == render_table(
        ["GROUPING", "CIDR", "IPS TOTAL", "IPS IN USE", "IPS RESERVED", "IPS FREE", "IPS COOLING"],
        [["IP Pool", "10.65.0.0/24", "256", "6 (2%)", "4 (2%)", "246 (96%)", "1 (0%)"],
         ["Block", v4_block, "64", "6 (9%)", f"{reserved_in_block} ({100 * reserved_in_block / 64:.0f}%)",
          f"{free} ({100 * free / 64:.0f}%)", "1 (2%)"],
         ["IP Pool", "fd00:65::/120", "256", "1 (0%)", "0 (0%)", "255 (100%)", "0 (0%)"],
         ["Block", v6_block, "64", "1 (2%)", "0 (0%)", "63 (98%)", "0 (0%)"]],
        right=(2, 3, 4, 5, 6))


def test_show_block_row_arithmetic(ctl, store):
    pool(store, "p1", "10.70.0.0/26")
    create(store, "apiVersion: projectcalico.org/v3\nkind: IPReservation\nmetadata: {name: r}\n"
                  "spec: {reservedCIDRs: [10.70.0.60/30]}\n")
    ipam = IPAM(store, "node-1")
    for i in range(3):
        ipam.auto_assign(f"h{i}", {})
    run = ctl("show", "--show-blocks")
    assert run.out.splitlines()[3:5] == [
        "| IP Pool  | 10.70.0.0/26 |        64 |     3 (5%) |       4 (6%) | 57 (89%) |      0 (0%) |",
        "| Block    | 10.70.0.0/26 |        64 |     3 (5%) |       4 (6%) | 57 (89%) |      0 (0%) |",
    ]


def test_orphaned_blocks_show_only_as_block_rows(ctl, store):
    pool(store, "p1", "10.71.0.0/26")
    ipam = IPAM(store, "node-1")
    ipam.auto_assign("h", {})
    store.delete("IPPool", "p1")
    assert ctl("show").out.count("\n") == 4  # borders and header only
    lines = ctl("show", "--show-blocks").out.splitlines()
    assert len(lines) == 5 and lines[3].startswith("| Block    | 10.71.0.0/26 |        64 |     1 (2%) |")


def test_show_ip(ctl, store):
    pool(store)
    ip = assign(store, "node-1", "k8s-pod-network.c1", pod="web-0")
    run = ctl("show", f"--ip={ip}")
    assert run.code == 0
    lines = run.out.splitlines()
    assert lines[:5] == [f"IP {ip} is in use", "Handle ID: k8s-pod-network.c1", "Active Owner Attributes:",
                         "  namespace: default", "  node: node-1"]
    assert lines[5] == "  pod: web-0" and lines[6].startswith("  timestamp: ") and len(lines) == 7
    assert ctl("show", "--ip", "10.65.0.250").out == "10.65.0.250 is not assigned\n"
    assert ctl("show", "--ip", "192.0.2.1").out == "192.0.2.1 is not assigned\n"
    run = ctl("show", "--ip", "10.65.0.300")
    assert (run.code, run.out) == (1, "Error executing command: invalid IP address specified: 10.65.0.300\n")


def test_show_borrowed(ctl, store):
    pool(store, "p1", "10.72.0.0/26")  # one block: the second node must borrow
    mine = assign(store, "node-1", "a", pod="a")
    theirs = assign(store, "node-2", "b", pod="b")
    IPAM(store, "node-2").auto_assign("tunnel", {"type": "vxlanTunnelAddress"})
    run = ctl("show", "--show-borrowed")
    assert run.code == 0
    assert run.out == render_table(
        ["IP", "BORROWING-NODE", "BLOCK", "BLOCK OWNER", "TYPE", "ALLOCATED-TO"],
        [[theirs, "node-2", "10.72.0.0/26", "node-1", "pod", "default/b"],
         ["10.72.0.2", "node-2", "10.72.0.0/26", "node-1", "vxlanTunnelAddress", ""]])
    assert f"| {mine} " not in run.out


def test_configure_and_show_configuration(ctl, store):
    run = ctl("show", "--show-configuration")
    assert run.out == render_table(["PROPERTY", "VALUE"], [["StrictAffinity", "false"],
                                                           ["AutoAllocateBlocks", "true"],
                                                           ["MaxBlocksPerHost", "0"], ["IPCooldownSeconds", "0"]])
    run = ctl("configure", "--strictaffinity=true")
    assert (run.code, run.out, run.err) == (0, "Successfully set StrictAffinity to: true\n", "")
    run = ctl("configure", "--max-blocks-per-host", "4", "--ip-cooldown-seconds=60")
    assert run.out == "Successfully set MaxBlocksPerHost to: 4\nSuccessfully set IPCooldownSeconds to: 60\n"
    spec = store.get(IPAMConfig.KIND, "default").spec
    assert (spec.strict_affinity, spec.auto_allocate_blocks, spec.max_blocks_per_host,
            spec.ip_cooldown_seconds) == (True, True, 4, 60)
    assert "| MaxBlocksPerHost   | 4     |" in ctl("show", "--show-configuration").out
    # The same values again: nothing to write, the same lines.
    rv = store.get(IPAMConfig.KIND, "default").metadata.resource_version
    assert ctl("configure", "--strictaffinity=T").code == 0
    assert store.get(IPAMConfig.KIND, "default").metadata.resource_version == rv

    errors = {
        ("--strictaffinity=maybe",): "invalid value. Use true or false to set strictaffinity\n",
        ("--max-blocks-per-host=many",): "invalid value for maxblockhost. Use a valid number\n",
        ("--strictaffinity=false",): "error: MaxBlocksPerHost requires StrictAffinity to be enabled\n",
        ("--ip-cooldown-seconds=5000",): "error: ipCooldownSeconds: must be between 0 and 1200, got 5000\n",
        ("--kubevirt-ip-persistence=Sometimes",): "invalid value for --kubevirt-ip-persistence. "
                                                  "Use Enabled or Disabled\n",
        (): "at least one configuration option must be specified\n",
    }
    for args, text in errors.items():
        run = ctl("configure", *args)
        assert (run.code, run.out, run.err) == (1, "", text), args
    run = ctl("configure", "--strictaffinity=false", "--max-blocks-per-host=0")
    assert run.code == 0, run.err
    assert store.get(IPAMConfig.KIND, "default").spec.strict_affinity is False


# --- check -------------------------------------------------------------------------------------


def test_check_a_consistent_cluster(ctl, store):
    cluster_info(store)
    pool(store)
    node(store, "node-1", ipv4VXLANTunnelAddr="10.65.0.250")
    a = assign(store, "node-1", "k8s-pod-network.a", pod="a")
    b = assign(store, "node-1", "k8s-pod-network.b", pod="b")
    wep(store, "a", a)
    wep(store, "b", b)
    tunnel = IPAM(store, "node-1").assign_ip("10.65.0.250", "vxlan-tunnel-addr-node-1",
                                            {"type": "vxlanTunnelAddress"})
    block = str(tunnel.network)
    run = ctl("check")
    assert run.code == 0 and run.err == ""
    blocks = sorted({block, str(IPAM(store, "node-1").get_assignment_attributes(a).block)},
                    key=lambda c: tuple(int(x) for x in c.split("/")[0].split(".")))
    assert run.out.splitlines() == [
        "Checking IPAM for inconsistencies...",
        "",
        "Loading all IPAM blocks...",
        f"Found {len(blocks)} IPAM blocks.",
        *[f" IPAM block {c} affinity=host:node-1:" for c in blocks],
        "IPAM blocks record 3 allocations.",
        "",
        "Loading all IPAM pools...",
        "  10.65.0.0/24",
        "Found 1 active IP pools.",
        "",
        "Loading all nodes.",
        "Found 1 node tunnel IPs.",
        "",
        "Loading all workload endpoints.",
        "Found 2 workload IPs.",
        "Workloads and nodes are using 3 IPs.",
        "",
        "Loading all handles",
        "Looking for top (up to 20) nodes by allocations...",
        "  node-1 has 3 allocations",
        "Node with most allocations has 3; median is 3",
        "",
        "Scanning for IPs that are allocated but not actually in use...",
        "Found 0 IPs that are allocated in IPAM but not actually in use.",
        "Scanning for IPs that are in use by a workload or node but not allocated in IPAM...",
        "Found 0 in-use IPs that are not in active IP pools.",
        "Found 0 in-use IPs that are in active IP pools but have no corresponding IPAM allocation.",
        "",
        "Scanning for IPAM handles with no matching IPs...",
        "Found 0 handles with no matching IPs (and 3 handles with matches).",
        "Scanning for IPs with missing handle...",
        "Found 0 handles mentioned in blocks with no matching handle resource.",
        "Scanning IPAM blocks, affinities and handle counts for inconsistencies...",
        "Found 0 inconsistencies in IPAM blocks, affinities and handles.",
        "Check complete; found 0 problems.",
    ]


def test_check_needs_cluster_information(ctl, store):
    run = ctl("check")
    assert run.code == 1
    assert run.out == "Checking IPAM for inconsistencies...\n\n"
    assert run.err == "resource does not exist: ClusterInformation(default) with error: <nil>\n"


def test_check_classifies_every_kind_of_address(ctl, store, tmp_path):
    cluster_info(store)
    pool(store)
    create(store, "apiVersion: projectcalico.org/v3\nkind: IPAMConfiguration\nmetadata: {name: default}\n"
                  "spec: {strictAffinity: false, autoAllocateBlocks: true, ipCooldownSeconds: 600}\n")
    node(store, "node-1", ipv4VXLANTunnelAddr="10.65.0.251")
    ipam = IPAM(store, "node-1")
    held = assign(store, "node-1", "held")
    wep(store, "held", held)
    gone = assign(store, "node-1", "gone")  # its pod went away without a CNI DEL
    ipam.assign_ip("10.65.0.251", "vxlan-tunnel-addr-node-1", {"type": "vxlanTunnelAddress"})
    ipam.assign_ip("10.65.0.252", "vxlan-stale", {"type": "vxlanTunnelAddress"})  # no node names it
    ipam.assign_ip("10.65.0.253", "windows-reserved-ipam-handle", {"note": "windows host rsvd"})
    ipam.assign_ip("10.65.0.254", "lb", {"type": "somethingNew"})
    cooling = assign(store, "node-1", "cooling")
    ipam.release_by_handle("cooling")
    wep(store, "outside", "192.0.2.7", node="node-1")  # in no pool
    wep(store, "unallocated", "10.65.0.200")  # in the pool, never allocated
    report_path = tmp_path / "report.json"

    run = ctl("check", "--show-problem-ips", "-o", str(report_path))
    assert run.code == 0, run.err
    out = tail(run.out, "Scanning for IPs that are allocated but not actually in use...")
    assert out[1].startswith(f"  {gone} leaked; attrs Main:gone Extra:namespace=default,node=node-1,pod=gone,"
                             "timestamp=")
    assert out[2] == "  10.65.0.252 leaked; attrs Main:vxlan-stale Extra:node=node-1," + out[2].split(",", 1)[1]
    assert out[3:] == [
        "Found 2 IPs that are allocated in IPAM but not actually in use.",
        "Scanning for IPs that are in use by a workload or node but not allocated in IPAM...",
        "  10.65.0.200 in use by Workload(default/node-1-k8s-unallocated-eth0) and in active IPAM pool but has no "
        "IPAM allocation.",
        "  192.0.2.7 in use by Workload(default/node-1-k8s-outside-eth0) is not in any active IP pool.",
        "Found 1 in-use IPs that are not in active IP pools.",
        "Found 1 in-use IPs that are in active IP pools but have no corresponding IPAM allocation.",
        "",
        "Scanning for IPAM handles with no matching IPs...",
        "Found 0 handles with no matching IPs (and 6 handles with matches).",
        "Scanning for IPs with missing handle...",
        "Found 0 handles mentioned in blocks with no matching handle resource.",
        "Scanning IPAM blocks, affinities and handle counts for inconsistencies...",
        "Found 0 inconsistencies in IPAM blocks, affinities and handles.",
        "Check complete; found 4 problems.",
    ]

    text = report_path.read_text()
    assert not text.endswith("\n") and oct(os.stat(report_path).st_mode & 0o777) == oct(0o777 & ~_umask())
    report = json.loads(text)
    assert list(report) == ["version", "clusterGUID", "datastoreLocked", "clusterInformationRevision",
                            "clusterType", "allocations"]
    info = store.get("ClusterInformation", "default")
    assert report["version"] == client_version() and report["clusterGUID"] == GUID
    assert report["clusterInformationRevision"] == info.metadata.resource_version
    assert (report["clusterType"], report["datastoreLocked"]) == ("k8s,bgp", False)
    allocations = report["allocations"]
    assert list(allocations) == sorted(allocations)  # Go marshals map keys in order
    (a,) = allocations[held]
    assert list(a) == ["ip", "handle", "sequenceNumber", "pod", "namespace", "node", "creationTimestamp",
                       "inUse", "owners"]
    assert (a["inUse"], a["owners"]) == (True, ["Workload(default/node-1-k8s-held-eth0)"])
    assert allocations[gone][0]["inUse"] is False and allocations[gone][0]["owners"] is None
    assert allocations["10.65.0.251"][0]["owners"] == ["Node(node-1)"]
    assert allocations["10.65.0.251"][0]["type"] == "vxlanTunnelAddress"
    assert allocations["10.65.0.252"][0]["inUse"] is False
    assert allocations["10.65.0.253"][0]["owners"] == ["Reserved for Windows"]
    assert allocations["10.65.0.254"][0]["owners"] == ["UnknownType(somethingNew)"]
    cooled = allocations[cooling][0]
    assert "handle" not in cooled and cooled["pod"] == "cooling"  # released: the owner is kept, the handle not
    assert (cooled["inUse"], cooled["coolingDown"], cooled["owners"]) == (False, True, None)
    block = IPAM(store, "node-1").get_assignment_attributes(held)
    assert a["sequenceNumber"] == block.sequence_number


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_check_show_all_ips_and_borrowed_allocations(ctl, store, tmp_path):
    cluster_info(store)
    pool(store, "p1", "10.73.0.0/26")
    first = assign(store, "node-1", "a")
    second = assign(store, "node-2", "b")  # borrowed from node-1's block
    wep(store, "a", first)
    wep(store, "b", second, node="node-2")
    store.create(IPAMHandle(metadata=ObjectMeta(name="orphan-handle"),
                            spec=IPAMHandleSpec(handle_id="orphan-handle", block={"10.73.0.0/26": 1})))
    run = ctl("check", "--show-all-ips", "-o", str(tmp_path / "r.json"))
    lines = run.out.splitlines()
    assert f"  {first} allocated; attrs Main:a Extra:namespace=default,node=node-1,pod=a," + \
        lines[lines.index(" IPAM block 10.73.0.0/26 affinity=host:node-1:") + 1].split("pod=a,", 1)[1] in lines
    assert f"  {second} belongs to Workload(default/node-2-k8s-b-eth0)" in lines
    assert "  orphan-handle doesn't have any active IPs." in lines
    assert "Found 1 handles with no matching IPs (and 2 handles with matches)." in lines
    assert "  node-1 has 1 allocations" in lines and "  node-2 has 1 allocations" in lines
    assert lines[-1] == "Check complete; found 1 problems."
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["allocations"][second][0]["borrowed"] is True
    assert "borrowed" not in report["allocations"][first][0]
    (leaked,) = report["leakedHandles"]
    h = store.get(IPAMHandle.KIND, "orphan-handle")
    assert leaked == {"ID": "orphan-handle", "UID": h.metadata.uid, "Revision": h.metadata.resource_version}


# --- release -----------------------------------------------------------------------------------


def test_release_one_ip(ctl, store):
    pool(store)
    ip = assign(store, "node-1", "h")
    run = ctl("release", f"--ip={ip}")
    assert (run.code, run.out, run.err) == (0, f"Successfully released IP address {ip}\n", "")
    run = ctl("release", "--ip", ip)
    assert (run.code, run.out, run.err) == (1, "", f"IP address {ip} is not assigned\n")
    run = ctl("release", "--ip", "nonsense")
    assert (run.code, run.out) == (1, "Error executing command: invalid IP address specified: nonsense\n")
    assert ctl("release").code == 0  # neither option: nothing to do, as Calico


def test_a_leak_found_by_check_is_released_from_the_report(ctl, store, tmp_path):
    cluster_info(store)
    pool(store)
    held = assign(store, "node-1", "k8s-pod-network.held")
    wep(store, "held", held)
    leaked = [assign(store, "node-1", f"k8s-pod-network.lost{i}") for i in range(3)]
    lock(store)
    report = tmp_path / "report.json"
    run = ctl("check", "-o", str(report))
    assert "Found 3 IPs that are allocated in IPAM but not actually in use." in run.out
    assert json.loads(report.read_text())["datastoreLocked"] is True

    run = ctl("release", "--from-report", str(report))
    assert (run.code, run.err) == (0, "")
    assert run.out == ("Releasing 3 old IPs...\n"
                       "Released 3 IPs successfully\n"
                       "Report didn't contain any handles to clean up.\n"
                       "You may now unlock the data store.\n")
    ipam = IPAM(store, "node-1")
    assert ipam.ips_by_handle("k8s-pod-network.held") != []
    assert all(ipam.ips_by_handle(f"k8s-pod-network.lost{i}") == [] for i in range(3))
    assert ctl("check").out.endswith("Check complete; found 0 problems.\n")
    # The same report again: what it names is already clean.
    run = ctl("release", "--from-report", str(report))
    assert run.out.splitlines()[:3] == ["Releasing 3 old IPs...", "Released 0 IPs successfully",
                                        "3 addresses marked as leaked in the report had already been cleaned up."]
    assert leaked


def test_release_from_report_refusals(ctl, store, tmp_path):
    cluster_info(store)
    pool(store)
    assign(store, "node-1", "lost")
    report = tmp_path / "report.json"
    assert ctl("check", "-o", str(report)).code == 0

    run = ctl("release", "--from-report", str(report))
    assert (run.code, run.out, run.err) == (
        1, "", "data store is not locked. Either lock the data store, or re-run with --force\n")

    doc = json.loads(report.read_text())
    other = tmp_path / "other.json"
    other.write_text(json.dumps({**doc, "clusterGUID": "someone-else"}))
    run = ctl("release", "--from-report", str(other), "--force")
    assert run.err == (f"cluster does not match the provided report ({other}): mismatched cluster GUID. "
                       "Refusing to release\n")
    old = tmp_path / "old.json"
    old.write_text(json.dumps({**doc, "version": "v3.28.0"}))
    run = ctl("release", "--from-report", str(old))
    assert run.err == (f"the provided report ({old}) was produced using a different version (v3.28.0) of "
                       "calicoctl. Refusing to release\n")
    run = ctl("release", "--from-report", str(tmp_path / "missing.json"))
    assert run.err == f"open {tmp_path / 'missing.json'}: no such file or directory\n"

    lock(store)  # a new ClusterInformation revision: the report is stale now
    run = ctl("release", "--from-report", str(report))
    assert (run.code, run.err) == (1, "the provided reports are all stale - at least one should be up-to-date. "
                                      "Please generate a new report while the data store is locked and try again\n")
    assert IPAM(store, "node-1").ips_by_handle("lost") != []  # nothing was released

    lock(store, locked=False)
    fresh = tmp_path / "fresh.json"
    ctl("check", "-o", str(fresh))
    run = ctl("release", "--from-report", str(old), "--from-report", str(fresh), "--force")
    assert run.code == 0, run.err
    assert run.out.splitlines() == [
        "WARNING: Report was produced using a different version of calicoctl. Ignoring due to --force option",
        "WARNING: Data store is not locked. Ignoring due to --force option",
        "Releasing 1 old IPs...",
        "Released 1 IPs successfully",
        "Report didn't contain any handles to clean up.",
        "You may now unlock the data store.",
    ]


def test_release_keeps_an_address_handed_out_again_since_the_report(ctl, store, tmp_path):
    cluster_info(store, ready=False)
    pool(store, "p1", "10.74.0.0/30", ", blockSize: 30")
    ipam = IPAM(store, "node-1")
    ip = assign(store, "node-1", "first")
    report = tmp_path / "r.json"
    ctl("check", "-o", str(report))
    ipam.release_by_handle("first")
    for i in range(3):  # the block of 4 goes round: the next "first" address is someone else's
        ipam.auto_assign(f"next{i}", {})
    again = ipam.auto_assign("again", {}).v4[0]
    assert str(again.ip) == ip
    run = ctl("release", "--from-report", str(report))
    assert run.code == 0
    assert run.out.startswith("Releasing 1 old IPs...\nAn error occurred while releasing some IPs: ")
    assert "Try regenerating the IPAM report and retry.\n" in run.out
    assert ipam.ips_by_handle("again") == [again.ip]


def test_leaked_handle_from_a_crash_is_deleted_only_if_unchanged(ctl, store, tmp_path):
    cluster_info(store, ready=False)
    pool(store)
    wep(store, "earlier", assign(store, "node-1", "earlier"))
    with pytest.raises(Crash):
        IPAM(store, "node-1", checkpoint=crash_at("handle-counted")).auto_assign("crashed", {})
    report = tmp_path / "r.json"
    run = ctl("check", "--show-all-ips", "-o", str(report))
    assert "  crashed doesn't have any active IPs." in run.out
    assert "Found 1 handles with no matching IPs (and 1 handles with matches)." in run.out
    assert "Found 0 inconsistencies in IPAM blocks, affinities and handles." in run.out  # counted once
    run = ctl("release", "--from-report", str(report))
    assert run.out.splitlines()[:4] == [
        "Report didn't contain any leaked IPs to clean up.",
        "Deleting 1 handles...",
        "Key: '.' = Deleted OK; 'x' = skip, handle missing/changed.",
        ".",
    ]
    assert "Released 1 handles; 0 skipped; 0 errors." in run.out
    with pytest.raises(Exception):
        store.get(IPAMHandle.KIND, "crashed")
    assert ctl("check").out.endswith("found 0 problems.\n")

    # A handle that changed since the report is skipped.
    with pytest.raises(Crash):
        IPAM(store, "node-1", checkpoint=crash_at("handle-counted")).auto_assign("again", {})
    ctl("check", "-o", str(report))
    wep(store, "again", str(IPAM(store, "node-1").auto_assign("again", {}).v4[0].ip))  # changed, and used
    run = ctl("release", "--from-report", str(report))
    assert "x\nReleased 0 handles; 1 skipped; 0 errors.\n" in run.out
    assert IPAM(store, "node-1").ips_by_handle("again") != []


def test_a_half_done_block_claim_is_reported_and_repaired_from_the_report(ctl, store, tmp_path):
    cluster_info(store, ready=False)
    pool(store)
    with pytest.raises(Crash):
        IPAM(store, "node-1", checkpoint=crash_at("affinity-pending")).auto_assign("h", {})
    (aff,) = store.list(BlockAffinity.KIND).items
    report = tmp_path / "r.json"
    run = ctl("check", "--show-problem-ips", "-o", str(report))
    cidr = aff.spec.cidr
    assert tail(run.out, "Scanning IPAM blocks, affinities and handle counts for inconsistencies...") == [
        "Scanning IPAM blocks, affinities and handle counts for inconsistencies...",
        f"  affinity-without-block: node-1 {cidr}: pending affinity, but the block does not exist",
        "Found 1 inconsistencies in IPAM blocks, affinities and handles.",
        "Check complete; found 1 problems.",
    ]
    assert json.loads(report.read_text())["inconsistencies"] == [
        {"kind": "affinity-without-block", "subject": f"node-1 {cidr}",
         "detail": "pending affinity, but the block does not exist"}]
    run = ctl("release", "--from-report", str(report))
    assert run.code == 0
    assert run.out.splitlines() == [
        "Report didn't contain any leaked IPs to clean up.",
        "Report didn't contain any handles to clean up.",
        "Repairing 1 IPAM inconsistencies...",
        f"  deleted node-1's pending affinity for {cidr}, which had no block",
        "Repaired 1 inconsistencies; 0 no longer found.",
        "You may now unlock the data store.",
    ]
    assert store.list(BlockAffinity.KIND).items == ()
    assert ctl("check").out.endswith("found 0 problems.\n")


def test_blocks_of_a_node_that_is_gone(ctl, store, tmp_path):
    cluster_info(store, ready=False)
    pool(store)
    node(store, "node-1")
    node(store, "node-2")
    kept = assign(store, "node-1", "kept")
    wep(store, "kept", kept)
    lost = assign(store, "node-2", "lost")
    store.delete("Node", "node-2")
    report = tmp_path / "r.json"
    run = ctl("check", "--show-problem-ips", "-o", str(report))
    lines = tail(run.out, "Scanning IPAM blocks, affinities and handle counts for inconsistencies...")
    assert lines[1].startswith("  block-of-missing-node: ") and lines[1].endswith(
        "is affine to node node-2, which does not exist")
    assert lines[-1] == "Check complete; found 2 problems."  # the address, and the block
    run = ctl("release", "--from-report", str(report))
    assert "Released 1 IPs successfully" in run.out
    assert "Repaired 1 inconsistencies; 0 no longer found." in run.out
    assert ctl("check").out.endswith("found 0 problems.\n")
    assert [a.spec.node for a in store.list(BlockAffinity.KIND).items] == ["node-1"]
    assert lost
