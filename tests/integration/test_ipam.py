"""calico-ipam against real datastores: etcd (a real etcd server) and Kubernetes (the
API stand-in of tests/kubeapi through the KDD plugin), the same tests for both.

Concurrency and crash tests run real OS processes (``python -c``) that connect to the
same datastore, allocate, and (for the crash tests) end with ``os._exit`` at a named
point between two writes.
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import attrs
import pytest

from pycalico.core.datastore import NotFound
from pycalico.core.resources import load_resources
from pycalico.core.resources.ipam import BlockAffinity, IPAMBlock, IPAMConfig, IPAMConfigSpec, IPAMHandle
from pycalico.core.resources.meta import ObjectMeta
from pycalico.plugins.ipam.calico_ipam import (
    IPAM,
    AddressInUse,
    AffinityConflict,
    BlockLimitReached,
    HandleInUse,
    IPAMError,
    IPAMExhausted,
    NoPool,
    NotAssigned,
    ReleaseOptions,
    StaleRelease,
)


# --- backends -----------------------------------------------------------------------------


@attrs.define
class Backend:
    name: str
    store: object
    child: dict  # how a child process connects (JSON)
    add_node: object  # add_node(name, labels)


@pytest.fixture(params=["etcd", "kubernetes"])
def backend(request):
    if request.param == "etcd":
        server = request.getfixturevalue("etcd_server")
        store = request.getfixturevalue("etcd_datastore")

        def add_node(name, labels=None):
            (node,) = load_resources(f"apiVersion: projectcalico.org/v3\nkind: Node\nmetadata: {{name: {name}}}\n")
            store.create(attrs.evolve(node, metadata=attrs.evolve(node.metadata, labels=labels or None)))

        return Backend("etcd", store, {"type": "etcd", "endpoints": list(server.endpoints)}, add_node)
    store = request.getfixturevalue("kdd_datastore")
    kubeconfig = request.getfixturevalue("kdd_kubeconfig")

    def add_kube_node(name, labels=None):  # Calico reads Nodes from Kubernetes' own
        body = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels or {}}}
        store.api.request("POST", "/api/v1/nodes", body=body)

    return Backend("kubernetes", store, {"type": "kubernetes", "kubeconfig": str(kubeconfig)}, add_kube_node)


def pool(store, name, cidr, **spec):
    extra = "".join(f", {k}: {json.dumps(v)}" for k, v in spec.items())
    (p,) = load_resources(f"apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {{name: {name}}}\n"
                          f"spec: {{cidr: {cidr}{extra}}}\n")
    return store.create(p)


def ipam_config(store, **spec):
    cfg = IPAMConfig(metadata=ObjectMeta(name="default"), spec=IPAMConfigSpec(**{
        "strict_affinity": False, "auto_allocate_blocks": True, **spec}))
    try:
        current = store.get(IPAMConfig.KIND, "default")
    except NotFound:
        return store.create(cfg)
    return store.update(attrs.evolve(cfg, metadata=current.metadata))


def ips(result):
    return [i.ip for i in result.all]


class Clock:
    def __init__(self, now=1_800_000_000.0):
        self.now = now

    def __call__(self):
        return self.now


# --- allocation ---------------------------------------------------------------------------


def test_first_allocation_claims_a_block_then_reuses_it(backend):
    store = backend.store
    pool(store, "default-ipv4-ippool", "10.65.0.0/24")
    ipam = IPAM(store, "node-1")
    first = ipam.auto_assign("k8s-pod-network.c1", {"pod": "web-0", "namespace": "default"})
    (iface,) = first.v4
    assert first.v6 == [] and iface.network.prefixlen == 26  # block-masked, as Calico returns it
    cidr = str(iface.network)

    block = store.get(IPAMBlock.KIND, cidr.replace(".", "-").replace("/", "-"))
    assert block.spec.affinity == "host:node-1" and block.spec.affinity_claim_time
    ordinal = int(iface.ip) - int(iface.network.network_address)
    attr = block.spec.attributes[block.spec.allocations[ordinal]]
    assert attr.handle == "k8s-pod-network.c1"
    assert attr.secondary["pod"] == "web-0" and attr.secondary["node"] == "node-1" and "timestamp" in attr.secondary
    assert block.spec.unallocated[0] == ordinal + 1 and ordinal == 0
    assert block.spec.sequence_number_for_allocation == {"0": block.spec.sequence_number - 1}

    aff = store.get(BlockAffinity.KIND, BlockAffinity.name_for("node-1", cidr))
    assert (aff.spec.state, aff.spec.node, aff.spec.cidr) == ("confirmed", "node-1", cidr)
    handle = store.get(IPAMHandle.KIND, "k8s-pod-network.c1")
    assert handle.spec.block == {cidr: 1}

    # The next ones come from the same block, in order, until it is full ...
    rest = ipam.auto_assign("k8s-pod-network.c2", {}, num_v4=63)
    assert {i.network for i in rest.v4} == {iface.network}
    assert [int(i.ip) - int(iface.network.network_address) for i in rest.v4] == list(range(1, 64))
    assert store.get(IPAMHandle.KIND, "k8s-pod-network.c2").spec.block == {cidr: 63}
    # ... then a second block is claimed.
    more = ipam.auto_assign("k8s-pod-network.c3", {})
    assert more.v4[0].network != iface.network and more.v4[0].network.prefixlen == 26
    assert len(store.list(BlockAffinity.KIND).items) == 2
    assert ipam.check().ok


def test_block_size_from_the_pool_and_ipv6(backend):
    store = backend.store
    pool(store, "small", "10.70.0.0/24", blockSize=29)
    pool(store, "v6", "fd00:70::/120", blockSize=124)
    ipam = IPAM(store, "node-1")
    got = ipam.auto_assign("h", {}, num_v4=2, num_v6=2)
    assert {i.network.prefixlen for i in got.v4} == {29} and {i.network.prefixlen for i in got.v6} == {124}
    assert all(i.ip in ipaddress.ip_network("fd00:70::/120") for i in got.v6)
    # A default IPv6 pool has 2**58 blocks of /122: walked lazily, never listed.
    pool(store, "wide", "fd00:71::/64")
    wide = ipam.auto_assign("w", {}, num_v4=0, num_v6=2, pools=["wide"]).v6
    assert {i.network.prefixlen for i in wide} == {122} and wide[0].network == wide[1].network
    assert ipam.ips_by_handle("h") == sorted(ips(got), key=lambda ip: (ip.version, ip))
    assert ipam.check().ok


def test_node_selector_disabled_pools_and_reservations(backend):
    store = backend.store
    backend.add_node("node-a", {"zone": "a"})
    backend.add_node("node-b", {"zone": "b"})
    pool(store, "pool-a", "10.71.0.0/26", nodeSelector="zone == 'a'", blockSize=28)
    pool(store, "pool-b", "10.72.0.0/26", nodeSelector="zone == 'b'", blockSize=28)
    pool(store, "off-pool", "10.73.0.0/26", disabled=True)
    (res,) = load_resources("apiVersion: projectcalico.org/v3\nkind: IPReservation\nmetadata: {name: r}\n"
                            "spec: {reservedCIDRs: [10.71.0.0/27, 10.71.0.33/32]}\n")
    store.create(res)
    a, b = IPAM(store, "node-a"), IPAM(store, "node-b")
    got_a = ips(a.auto_assign("ha", {}, num_v4=10))
    got_b = ips(b.auto_assign("hb", {}, num_v4=3))
    assert all(ip in ipaddress.ip_network("10.71.0.32/27") for ip in got_a)  # the half not reserved
    assert ipaddress.ip_address("10.71.0.33") not in got_a
    assert all(ip in ipaddress.ip_network("10.72.0.0/26") for ip in got_b)
    # A node that no pool selects (it has no Node resource, so no labels) gets nothing.
    with pytest.raises(NoPool, match="selects node node-c"):
        IPAM(store, "node-c").auto_assign("hc", {})
    # Disabled pools give nothing, even when asked for by name.
    with pytest.raises(NoPool, match="disabled"):
        a.auto_assign("hx", {}, pools=["off-pool"])
    # Requested pools are used whatever their node selector.
    assert ips(a.auto_assign("hy", {}, pools=["10.72.0.0/26"]))[0] in ipaddress.ip_network("10.72.0.0/26")
    # The reserved addresses are never handed out: 31 left in pool-a, all of them go.
    left = 64 - 33 - len(got_a)
    assert len(a.auto_assign("hz", {}, num_v4=left).v4) == left
    with pytest.raises(IPAMExhausted, match=r"pool-a \(10.71.0.0/26: 31 of 64 in use, 33 reserved\)"):
        a.auto_assign("hw", {})
    assert a.check(nodes=["node-a", "node-b"]).ok


def test_namespace_selector(backend):
    store = backend.store
    pool(store, "team-x", "10.74.0.0/26", namespaceSelector="team == 'x'")
    pool(store, "general", "10.75.0.0/26", namespaceSelector="!has(team)")
    ipam = IPAM(store, "node-1")
    assert ips(ipam.auto_assign("h1", {}, namespace_labels={"team": "x"}))[0] in ipaddress.ip_network("10.74.0.0/26")
    assert ips(ipam.auto_assign("h2", {}, namespace_labels={}))[0] in ipaddress.ip_network("10.75.0.0/26")


def test_borrowing_when_strict_affinity_is_false_refused_when_true(backend):
    store = backend.store
    pool(store, "tiny", "10.76.0.0/27", blockSize=28)  # two blocks of 16
    n1, n2, n3 = IPAM(store, "n1"), IPAM(store, "n2"), IPAM(store, "n3")
    b1 = n1.auto_assign("h1", {}).v4[0].network
    b2 = n2.auto_assign("h2", {}).v4[0].network
    assert b1 != b2
    # n3 can claim no block: it borrows from n1's or n2's.
    borrowed = n3.auto_assign("h3", {}, num_v4=3)
    assert {i.network for i in borrowed.v4} <= {b1, b2}
    assert n3.get_assignment_attributes(borrowed.v4[0].ip).attrs["node"] == "n3"
    assert store.list(BlockAffinity.KIND).items and not any(
        a.spec.node == "n3" for a in store.list(BlockAffinity.KIND).items)

    ipam_config(store, strict_affinity=True)
    with pytest.raises(IPAMExhausted) as err:
        n3.auto_assign("h4", {})
    text = str(err.value)
    assert "no free addresses in IP pool tiny (10.76.0.0/27: 5 of 32 in use)" in text
    assert "strictAffinity" in text
    # n1 still fills its own block.
    assert n1.auto_assign("h5", {}).v4[0].network == b1
    assert n1.check().ok


def test_a_pool_filled_by_racing_nodes_that_borrow(backend):
    """Four blocks, three nodes, 32 requests at once: every address is handed out
    exactly once, whoever claims and whoever borrows, and then the pool is full."""
    store = backend.store
    pool(store, "p", "10.94.0.0/27", blockSize=29)
    nodes = [IPAM(store, f"node-{i}") for i in range(3)]

    def work(t):
        return [ip for i in range(4) for ip in ips(nodes[t % 3].auto_assign(f"t{t}-{i}", {}))]

    with ThreadPoolExecutor(8) as ex:
        handed = [ip for r in ex.map(work, range(8)) for ip in r]
    assert sorted(handed) == list(ipaddress.ip_network("10.94.0.0/27"))
    with pytest.raises(IPAMExhausted, match=r"\(10.94.0.0/27: 32 of 32 in use\)"):
        nodes[0].auto_assign("extra", {})
    report = nodes[0].check()
    assert report.ok and report.in_use == 32, str(report)


def test_an_empty_block_of_another_node_is_reclaimed_after_a_minute(backend):
    store = backend.store
    pool(store, "p", "10.96.0.0/28", blockSize=29)  # two blocks of 8
    ipam_config(store, strict_affinity=True)  # no borrowing: a block is the only way
    clock = Clock()
    n1, n2, n3 = (IPAM(store, n, clock=clock) for n in ("n1", "n2", "n3"))
    n1.auto_assign("h1", {})
    n2.auto_assign("h2", {})
    n1.release_by_handle("h1")  # n1's block is empty now, but n1 keeps it
    assert len(_affine(store, "n1")) == 1
    clock.now += 30
    with pytest.raises(IPAMExhausted, match="strictAffinity"):
        n3.auto_assign("h3", {})
    clock.now += 31  # claimed more than a minute ago: n3 may take it over
    got = n3.auto_assign("h3", {}).v4[0]
    assert _affine(store, "n1") == [] and _affine(store, "n3") == [str(got.network)]
    assert n3.check().ok


def test_an_invalid_ipam_configuration_is_refused(backend):
    store = backend.store
    pool(store, "p", "10.95.0.0/26")
    ipam_config(store, strict_affinity=False, max_blocks_per_host=3)
    if backend.name == "etcd":
        # The etcd plugin reads a stored value that fails validation as absent (and logs
        # its key), as Calico's etcd backend skips what it cannot decode: IPAM then runs
        # on the defaults.
        assert len(IPAM(store, "node-1").auto_assign("h", {}).v4) == 1
        return
    with pytest.raises(IPAMError, match="maxBlocksPerHost: can only be set when strictAffinity is true"):
        IPAM(store, "node-1").auto_assign("h", {})


def test_max_blocks_per_host(backend):
    store = backend.store
    pool(store, "p", "10.77.0.0/26", blockSize=29)  # eight blocks of 8
    ipam_config(store, strict_affinity=True, max_blocks_per_host=2)
    ipam = IPAM(store, "node-1")
    assert len(ipam.auto_assign("h1", {}, num_v4=16).v4) == 16  # exactly two blocks
    with pytest.raises(BlockLimitReached, match="has 2 IPv4 blocks, all full.*limit 2"):
        ipam.auto_assign("h2", {})
    # A per-request limit lower than the configured one wins.
    other = IPAM(store, "node-2")
    other.auto_assign("h3", {}, num_v4=8, max_blocks_per_host=1)
    with pytest.raises(BlockLimitReached, match="limit 1"):
        other.auto_assign("h4", {}, max_blocks_per_host=1)
    # Nothing was left behind by the failed requests.
    assert ipam.ips_by_handle("h2") == [] and ipam.check().ok


def test_exhaustion_names_the_pool_and_leaves_nothing(backend):
    store = backend.store
    pool(store, "default-ipv4-ippool", "10.65.0.0/24")
    ipam = IPAM(store, "node-1")
    assert len(ipam.auto_assign("big", {}, num_v4=256).v4) == 256  # four blocks, all ours
    with pytest.raises(IPAMExhausted) as err:
        ipam.auto_assign("one-more", {})
    assert str(err.value) == "no free addresses in IP pool default-ipv4-ippool (10.65.0.0/24: 256 of 256 in use)"
    # A request that can be met only in part gets nothing.
    ipam.release_ips([f"10.65.0.{i}" for i in range(3)])
    with pytest.raises(IPAMExhausted, match="needs 5 IPv4 addresses, found 3"):
        ipam.auto_assign("five", {}, num_v4=5)
    assert ipam.ips_by_handle("five") == []
    assert len(ipam.auto_assign("three", {}, num_v4=3).v4) == 3
    assert ipam.check().ok


def test_dual_stack_half_failure_gives_back_the_first_half(backend):
    store = backend.store
    pool(store, "v4", "10.78.0.0/26")
    ipam = IPAM(store, "node-1")
    with pytest.raises(NoPool, match="IPv6"):
        ipam.auto_assign("h", {}, num_v4=1, num_v6=1)
    assert ipam.ips_by_handle("h") == []
    assert ipam.usage()[0].in_use == 0


def test_assign_ip(backend):
    store = backend.store
    pool(store, "p", "10.79.0.0/24")
    ipam = IPAM(store, "node-1")
    iface = ipam.assign_ip("10.79.0.77", "h1", {"pod": "fixed"})
    assert str(iface) == "10.79.0.77/26"
    assert store.get(BlockAffinity.KIND, BlockAffinity.name_for("node-1", "10.79.0.64/26")).spec.state == "confirmed"
    assert ipam.get_assignment_attributes("10.79.0.77").attrs["pod"] == "fixed"
    with pytest.raises(AddressInUse):
        ipam.assign_ip("10.79.0.77", "h2")
    with pytest.raises(NoPool):
        ipam.assign_ip("192.0.2.1", "h3")
    # Auto-assignment on the same node skips it.
    got = ips(ipam.auto_assign("h4", {}, num_v4=64 - 1))
    assert ipaddress.ip_address("10.79.0.77") not in got
    # With strictAffinity another node may not take an address in node-1's block.
    ipam.release_ips(["10.79.0.65"])
    ipam_config(store, strict_affinity=True)
    with pytest.raises(AffinityConflict):
        IPAM(store, "node-2").assign_ip("10.79.0.65", "h5")
    assert ipam.check().ok


def test_new_handle_refuses_a_handle_that_exists_and_assigns_nothing(backend):
    store = backend.store
    pool(store, "p", "10.81.0.0/24")
    pool(store, "v6", "fd00:81::/120", blockSize=124)
    ipam = IPAM(store, "node-1")
    first = ipam.auto_assign("h1", {}, num_v4=1, num_v6=1, new_handle=True)  # the second family adds to it
    assert store.get(IPAMHandle.KIND, "h1").spec.block == {str(first.v4[0].network): 1, str(first.v6[0].network): 1}
    with pytest.raises(HandleInUse):
        ipam.auto_assign("h1", {}, new_handle=True)
    assert ipam.ips_by_handle("h1") == sorted(ips(first), key=lambda ip: (ip.version, ip))
    assert ipam.check().in_use == 2
    more = ipam.auto_assign("h1", {})  # without new_handle the handle just counts one more
    assert len(ipam.ips_by_handle("h1")) == 3 and more.v4[0].ip not in ips(first)
    assert ipam.check().ok


class Counting:
    """The datastore, with a record of every call: (operation, kind)."""

    def __init__(self, store):
        self.store, self.calls = store, []

    def __getattr__(self, name):
        attr = getattr(self.store, name)
        if name not in ("get", "list", "create", "update", "delete"):
            return attr

        def call(first, *args, **kwargs):
            self.calls.append((name, first if isinstance(first, str) else first.kind))
            return attr(first, *args, **kwargs)

        return call


def test_remembered_blocks_save_reads_and_a_stale_one_costs_a_retry(backend):
    store = backend.store
    pool(store, "p", "10.82.0.0/24")
    ipam_config(store, ip_cooldown_seconds=0)
    counted = Counting(store)
    agent = IPAM(counted, "node-1", remember_blocks=True)  # the node's CNI agent
    other = IPAM(store, "node-1")  # another process of the same node, remembering nothing
    first = agent.auto_assign("a1", {})
    handed, cidr = ips(first), str(first.v4[0].network)

    # Warm: the block is written from memory, nothing of the block, affinity or handle read.
    counted.calls.clear()
    handed += ips(agent.auto_assign("a2", {}))
    ipam_kinds = {"IPAMBlock", "BlockAffinity", "IPAMHandle"}
    assert [c for c in counted.calls if c[1] in ipam_kinds] == [("create", "IPAMHandle"), ("update", "IPAMBlock")]

    # Someone else changed the block: the remembered version fails its compare-and-swap,
    # is read again, and the address is still one nobody has.
    handed += ips(other.auto_assign("o1", {}))
    counted.calls.clear()
    handed += ips(agent.auto_assign("a3", {}))
    assert [c for c in counted.calls if c[1] == "IPAMBlock"] == [("update", "IPAMBlock"), ("get", "IPAMBlock"),
                                                                 ("update", "IPAMBlock")]
    assert len(handed) == len(set(handed)) == 4

    # A release from a stale block retries too ...
    handed += ips(other.auto_assign("o2", {}))
    assert agent.release_by_handle("a2") == [handed[1]]
    # ... and "this handle holds nothing here" is never believed from memory: o3 was
    # assigned behind the agent's back, so the remembered block does not show it.
    handed += ips(other.auto_assign("o3", {}))
    counted.calls.clear()
    assert agent.release_by_handle("o3") == [handed[-1]] and other.ips_by_handle("o3") == []
    assert [c for c in counted.calls if c[1] == "IPAMBlock"] == [("get", "IPAMBlock"), ("update", "IPAMBlock")]
    assert agent.check().ok

    # The block taken away entirely: emptied and given up by the other process. The
    # agent's write from memory finds nothing, and it claims a block afresh.
    for h in ("a1", "a3", "o1", "o2"):
        other.release_by_handle(h)
    assert other.release_affinity(cidr) is True
    with pytest.raises(NotFound):
        store.get(IPAMBlock.KIND, cidr.replace(".", "-").replace("/", "-"))
    fresh = ips(agent.auto_assign("a4", {}))
    assert agent.ips_by_handle("a4") == fresh
    report = agent.check()
    assert report.ok and report.in_use == 1, str(report)


# --- release and cooldown -----------------------------------------------------------------


def test_release_by_handle_and_by_ip_are_idempotent(backend):
    store = backend.store
    pool(store, "p", "10.80.0.0/24")
    ipam = IPAM(store, "node-1")
    a = ips(ipam.auto_assign("ha", {}, num_v4=3))
    b = ips(ipam.auto_assign("hb", {}, num_v4=2))
    assert sorted(ipam.release_by_handle("ha")) == sorted(a)
    with pytest.raises(NotFound):
        store.get(IPAMHandle.KIND, "ha")
    assert ipam.release_by_handle("ha") == []
    assert ipam.release_by_handle("never-existed") == []
    for ip in a:
        with pytest.raises(NotAssigned):
            ipam.get_assignment_attributes(ip)

    assert ipam.release_ips([b[0]]) == []
    assert store.get(IPAMHandle.KIND, "hb").spec.block == {str(ipaddress.ip_network(f"{b[0]}/26", strict=False)): 1}
    # Released already, not in any block, outside every pool: all "not assigned", no error.
    left = ipam.release_ips([b[0], "10.80.0.200", "192.0.2.7"])
    assert sorted(map(str, left)) == sorted([str(b[0]), "10.80.0.200", "192.0.2.7"])
    assert ipam.ips_by_handle("hb") == [b[1]]
    # A release naming the wrong handle or sequence number releases nothing.
    seq = ipam.get_assignment_attributes(b[1]).sequence_number
    with pytest.raises(StaleRelease):
        ipam.release_ips([ReleaseOptions(b[1], handle="someone-else")])
    with pytest.raises(StaleRelease):
        ipam.release_ips([ReleaseOptions(b[1], sequence_number=seq + 12345)])
    assert ipam.release_ips([ReleaseOptions(b[1], handle="hb", sequence_number=seq)]) == []
    with pytest.raises(NotFound):
        store.get(IPAMHandle.KIND, "hb")
    # The node keeps its (now empty) block, as Calico does.
    assert len(store.list(BlockAffinity.KIND).items) == 1
    assert ipam.check().ok


def test_cooldown_keeps_a_released_address_from_reuse(backend):
    store = backend.store
    pool(store, "p", "10.81.0.0/29", blockSize=29)  # one block of 8
    ipam_config(store, ip_cooldown_seconds=120)
    clock = Clock()
    ipam = IPAM(store, "node-1", clock=clock)
    every = ips(ipam.auto_assign("h", {}, num_v4=8))
    assert len(set(every)) == 8
    ipam.release_ips([every[3], every[5]])
    # Cooling down: not assigned to anyone, yet not free.
    with pytest.raises(NotAssigned, match="cooling down"):
        ipam.get_assignment_attributes(every[3])
    assert ipam.release_ips([every[3]]) == [every[3]]  # releasing again: not an error
    with pytest.raises(AddressInUse, match="cooling down"):
        ipam.assign_ip(every[3], "other")
    with pytest.raises(IPAMExhausted, match=r"8 of 8 in use, 2 cooling down"):
        ipam.auto_assign("h2", {})
    usage = ipam.usage()[0]
    assert (usage.in_use, usage.cooling, usage.free) == (6, 2, 0)
    assert ipam.check().ok and ipam.check().cooling == 2

    clock.now += 119
    with pytest.raises(IPAMExhausted):
        ipam.auto_assign("h2", {})
    clock.now += 1
    got = ips(ipam.auto_assign("h2", {}, num_v4=2))
    assert sorted(got) == sorted([every[3], every[5]])
    assert ipam.check().ok


def test_freed_addresses_go_to_the_back_of_the_queue(backend):
    store = backend.store
    pool(store, "p", "10.82.0.0/28", blockSize=28)
    ipam = IPAM(store, "node-1")  # no cooldown configured: freed at once, reused last
    first = ips(ipam.auto_assign("h1", {}))[0]
    ipam.release_by_handle("h1")
    nxt = ips(ipam.auto_assign("h2", {}, num_v4=15))
    assert first not in nxt
    assert ips(ipam.auto_assign("h3", {})) == [first]


def test_non_affine_block_is_deleted_when_emptied(backend):
    store = backend.store
    pool(store, "p", "10.83.0.0/28", blockSize=28)
    ipam = IPAM(store, "node-1")
    got = ips(ipam.auto_assign("h", {}, num_v4=2))
    cidr = "10.83.0.0/28"
    assert ipam.release_affinity(cidr, must_be_empty=True) is False  # not empty: kept
    assert ipam.release_affinity(cidr, must_be_empty=False) is True  # now affine to nobody
    assert store.get(IPAMBlock.KIND, "10-83-0-0-28").spec.affinity is None
    ipam.release_ips(got)
    with pytest.raises(NotFound):
        store.get(IPAMBlock.KIND, "10-83-0-0-28")
    assert ipam.check().ok


# --- usage, hook ------------------------------------------------------------------------


def test_usage_per_pool_and_block(backend):
    store = backend.store
    pool(store, "a", "10.84.0.0/24")
    pool(store, "b", "10.85.0.0/24", disabled=True)
    IPAM(store, "n1").auto_assign("h1", {}, num_v4=5)
    IPAM(store, "n2").auto_assign("h2", {}, num_v4=70)
    usage = {u.name: u for u in IPAM(store, "n1").usage()}
    assert set(usage) == {"a", "b"}
    a = usage["a"]
    assert (a.total, a.in_use, a.free) == (256, 75, 181)
    assert sorted((b.node, b.in_use) for b in a.blocks) == [("n1", 5), ("n2", 6), ("n2", 64)]
    assert a.rows()[0] == ("IP Pool", "10.84.0.0/24", 256, 75, 181)
    assert len(a.rows(show_blocks=True)) == 4 and usage["b"].in_use == 0


def test_calico_toml_picks_calico_ipam_for_the_node(backend):
    from pycalico.core import config as cfg
    from pycalico.core.plugins import Plugins

    pool(backend.store, "p", "10.97.0.0/26")
    if backend.name == "etcd":
        table = f"[datastore]\ntype = \"etcd\"\n[datastore.etcd]\nendpoints = {json.dumps(backend.child['endpoints'])}\n"
    else:
        table = f"[datastore]\ntype = \"kubernetes\"\n[datastore.kubernetes]\nkubeconfig = \"{backend.child['kubeconfig']}\"\n"
    config = cfg.parse(f'node_name = "node-9"\n{table}[ipam]\ntype = "calico-ipam"\n')
    plugins = Plugins.load(config, slots=("datastore", "ipam"))
    try:
        ipam = plugins.ipam(plugins.datastore())
        assert isinstance(ipam, IPAM) and ipam.node == "node-9"
        assert ipam.auto_assign("h", {}).v4[0].ip in ipaddress.ip_network("10.97.0.0/26")
        assert _affine(backend.store, "node-9") != []
    finally:
        plugins.unconfigure()


# --- concurrency ----------------------------------------------------------------------------


def test_threads_on_three_nodes_never_share_an_address(backend):
    store = backend.store
    pool(store, "p", "10.86.0.0/24", blockSize=27)
    ipam_config(store, ip_cooldown_seconds=600)  # so that nothing released is handed out again here
    nodes = [IPAM(store, f"node-{i}") for i in range(3)]
    per_thread = 12

    def work(t):
        ipam = nodes[t % 3]
        out = []
        for i in range(per_thread):
            out += ips(ipam.auto_assign(f"t{t}-{i}", {"pod": f"p{t}-{i}"}))
            if i % 4 == 3:  # churn: give one back now and then
                ipam.release_by_handle(f"t{t}-{i - 1}")
        return out

    with ThreadPoolExecutor(8) as ex:
        results = list(ex.map(work, range(8)))
    handed = [ip for r in results for ip in r]
    assert len(handed) == 8 * per_thread and len(set(handed)) == len(handed)
    report = nodes[0].check()
    assert report.ok, str(report)
    assert report.in_use == 8 * per_thread - 8 * (per_thread // 4)
    # Every block is affine to one node and every address is where its handle says.
    for t in range(8):
        for i in range(per_thread):
            held = nodes[0].ips_by_handle(f"t{t}-{i}")
            assert len(held) == (0 if i % 4 == 2 else 1)


CHILD = r"""
import json, os, sys
spec = json.loads(sys.argv[1])
if spec["type"] == "etcd":
    from pycalico.plugins.datastore.etcd import Options, connect
    ds = connect(Options(endpoints=tuple(spec["endpoints"]), timeout_seconds=10))
else:
    from pycalico.plugins.datastore.kubernetes import Options, connect
    ds = connect(Options(kubeconfig=spec["kubeconfig"]))
from pycalico.plugins.ipam.calico_ipam import IPAM

def checkpoint(name):
    if name == spec.get("die_at"):
        sys.stdout.flush()
        os._exit(17)

ipam = IPAM(ds, spec["node"], checkpoint=checkpoint)
if spec.get("release"):
    ipam.release_by_handle(spec["release"])
if spec.get("release_affinity"):
    ipam.release_affinity(spec["release_affinity"])
out = []
for i in range(spec.get("count", 0)):
    for iface in ipam.auto_assign(f"{spec['prefix']}-{i}", {"pod": f"{spec['prefix']}-{i}"}).all:
        out.append(str(iface.ip))
print(json.dumps(out))
"""


def run_child(backend, **spec):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-c", CHILD, json.dumps({**backend.child, **spec})],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def test_processes_on_two_nodes_never_share_an_address(backend):
    store = backend.store
    pool(store, "p", "10.87.0.0/24", blockSize=28)
    procs = [run_child(backend, node=f"node-{i % 2}", prefix=f"proc{i}", count=15) for i in range(4)]
    handed = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        handed += json.loads(out)
    assert len(handed) == 60 and len(set(handed)) == 60
    report = IPAM(store, "node-0").check()
    assert report.ok and report.in_use == 60, str(report)


# --- crashes ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("die_at", "setup", "found"),
    [
        ("affinity-pending", None, "affinity-without-block"),  # claim: affinity written, block not
        ("block-created", None, "unconfirmed-affinity"),  # claim: block written, affinity still pending
        ("handle-counted", None, "handle-count"),  # first address: handle written, block not
        ("handle-counted", "allocate", "handle-count"),  # same, in a block already in use
        ("block-released", "release", "handle-count"),  # release: block written, handle not lowered
        ("affinity-pending-deletion", "release-affinity", "unconfirmed-affinity"),  # giving a block up
    ],
)
def test_a_process_killed_between_writes_leaves_what_check_finds_and_repair_fixes(backend, die_at, setup, found):
    store = backend.store
    pool(store, "p", "10.88.0.0/26", blockSize=28)
    ipam = IPAM(store, "node-1")
    spec = {"node": "node-1", "prefix": "crash", "count": 1, "die_at": die_at}
    if setup == "allocate":
        ipam.auto_assign("earlier", {}, num_v4=2)
    elif setup == "release":
        ipam.auto_assign("victim", {}, num_v4=2)
        spec.update(release="victim", count=0)
    elif setup == "release-affinity":
        ipam.auto_assign("tmp", {})
        ipam.release_by_handle("tmp")
        (cidr,) = _affine(store, "node-1")
        spec.update(release_affinity=cidr, count=0)
    child = run_child(backend, **spec)
    out, err = child.communicate(timeout=60)
    assert child.returncode == 17, (out, err)

    report = ipam.check()
    assert [p.kind for p in report.problems] == [found], str(report)
    lines = ipam.repair(report)
    assert lines, str(report)
    after = ipam.check()
    assert after.ok, f"{report}\n--- repaired:\n" + "\n".join(lines) + f"\n--- still:\n{after}"
    # The datastore still works: every address not held can be had once, none twice.
    held = ipam.ips_by_handle("earlier")
    rest = ips(ipam.auto_assign("after", {}, num_v4=64 - len(held)))
    assert len(set(rest + held)) == 64
    assert ipam.check().ok


def _affine(store, node):
    return sorted(a.spec.cidr for a in store.list(BlockAffinity.KIND).items if a.spec.node == node)


def test_kills_during_churn_then_repair(backend):
    """Processes on two nodes die at different points of allocating and releasing;
    after one repair the records add up and every address is held at most once."""
    store = backend.store
    pool(store, "p", "10.89.0.0/26", blockSize=30)  # blocks of 4: claims are frequent
    points = ["affinity-pending", "block-created", "handle-counted", "block-released", "handle-counted"]
    died = 0
    for n, point in enumerate(points):
        node = f"node-{n % 2}"
        for i in range(3):
            IPAM(store, node).auto_assign(f"r{n}-{i}", {})
        killed = run_child(backend, node=node, prefix=f"k{n}", count=3, die_at=point, release=f"r{n}-0")
        killed.communicate(timeout=60)
        assert killed.returncode in (0, 17)
        died += killed.returncode == 17
    assert died == len(points)
    ipam = IPAM(store, "node-0")
    first = ipam.check()
    assert not first.ok
    ipam.repair(first)
    report = ipam.check()
    assert report.ok, f"{first}\n---\n{report}"
    holders = {}
    for h in store.list(IPAMHandle.KIND).items:
        for ip in ipam.ips_by_handle(h.metadata.name):
            assert ip not in holders, f"{ip} held by {holders[ip]} and {h.metadata.name}"
            holders[ip] = h.metadata.name
    assert len(holders) == report.in_use


def test_empty_block_of_a_pool_that_stops_selecting_the_node_is_given_up(backend):
    store = backend.store
    backend.add_node("node-1", {"zone": "a"})
    old = pool(store, "old", "10.92.0.0/26", blockSize=28)
    ipam = IPAM(store, "node-1")
    ipam.auto_assign("h1", {})
    ipam.release_by_handle("h1")
    assert _affine(store, "node-1") != []
    store.update(attrs.evolve(old, spec=attrs.evolve(old.spec, node_selector="zone == 'b'")))
    pool(store, "new", "10.93.0.0/26", blockSize=28)
    got = ips(ipam.auto_assign("h2", {}))
    assert got[0] in ipaddress.ip_network("10.93.0.0/26")
    assert [ipaddress.ip_network(c).subnet_of(ipaddress.ip_network("10.93.0.0/26"))
            for c in _affine(store, "node-1")] == [True]
    assert ipam.check(nodes=["node-1"]).ok


# --- check and repair of other damage ---------------------------------------------------


def test_check_finds_and_repair_fixes_outside_damage(backend):
    store = backend.store
    pool(store, "p", "10.90.0.0/26", blockSize=28)
    ipam = IPAM(store, "node-1")
    a = ips(ipam.auto_assign("ha", {}, num_v4=2))
    ips(ipam.auto_assign("hb", {}, num_v4=1))
    # Someone deletes a handle record, another's count drifts, an affinity disappears,
    # a block's free list loses an entry, and an affinity names a block that is not there.
    store.delete(IPAMHandle.KIND, "ha")
    hb = store.get(IPAMHandle.KIND, "hb")
    store.update(attrs.evolve(hb, spec=attrs.evolve(hb.spec, block={"10.90.0.0/28": 5, "10.90.0.48/28": 1})))
    (cidr,) = _affine(store, "node-1")
    store.delete(BlockAffinity.KIND, BlockAffinity.name_for("node-1", cidr))
    raw = store.get(IPAMBlock.KIND, cidr.replace(".", "-").replace("/", "-"))
    store.update(attrs.evolve(raw, spec=attrs.evolve(raw.spec, unallocated=raw.spec.unallocated[1:])))
    other = next(c for c in ("10.90.0.0/28", "10.90.0.16/28", "10.90.0.32/28") if c != cidr)
    IPAM(store, "node-2")._pending_affinity(other)

    report = ipam.check()
    kinds = sorted(p.kind for p in report.problems)
    assert kinds == sorted(["block-bookkeeping", "block-without-affinity", "affinity-without-block",
                            "handle-missing", "handle-count"]), str(report)
    ipam.repair(report)
    assert ipam.check().ok, str(ipam.check())
    assert sorted(ipam.ips_by_handle("ha")) == sorted(a)  # rebuilt, not released
    assert sorted(ipam.release_by_handle("ha")) == sorted(a)
    assert len(ips(ipam.auto_assign("fill", {}, num_v4=64 - 1))) == 63


def test_node_gone_its_addresses_and_blocks_are_released(backend):
    store = backend.store
    pool(store, "p", "10.91.0.0/26", blockSize=28)
    backend.add_node("stays")
    IPAM(store, "stays").auto_assign("h1", {})
    gone = IPAM(store, "gone")
    gone.auto_assign("h2", {}, num_v4=2)
    report = gone.check()  # the Node resources exist: "gone" has none
    kinds = sorted(p.kind for p in report.problems)
    assert kinds == ["address-of-missing-node", "address-of-missing-node", "block-of-missing-node"], str(report)
    gone.repair(report)
    assert gone.check().ok
    assert gone.ips_by_handle("h2") == [] and _affine(store, "gone") == []
    assert len(IPAM(store, "stays").ips_by_handle("h1")) == 1
