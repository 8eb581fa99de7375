"""Addresses a node holds for its pods: calico-ipam's /26 blocks against host-local's
per-node /24.

    .venv/bin/python benchmarks/ipam_density.py [--pods 10,30,110]

Both sides are run, not computed:

* calico-ipam, against its own etcd (loopback, free ports, temp dir removed
  afterwards), one pool 10.0.0.0/16 with Calico's default /26 blocks: a fresh node
  allocates one address per pod; the node holds the blocks affine to it, so
  ``reserved = blocks x 64`` (read back from the BlockAffinity records).
* host-local, the real binary (/usr/lib/cni/host-local, ``CNI_PATH`` to override) in
  Calico's host-local mode, a /24 pod CIDR per node (Kubernetes' default node-cidr-mask-size):
  one ADD per pod with a data dir in a temp dir; the node holds its whole /24 (256
  addresses, of which host-local hands out 254: not the network address nor the
  gateway .1 nor the broadcast), whatever the number of pods.

Printed per pod count: addresses held per node by each, the ratio host-local /
calico-ipam, and how many nodes a /16 of pod addresses serves at that density.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _etcd  # noqa: E402  (same directory)
from ipam_rates import POOL  # noqa: E402

HOST_LOCAL_CIDR_BITS = 24


def calico_ipam_held(endpoint: str, node: str, pods: int) -> tuple[int, int]:
    """(blocks affine to ``node``, addresses in them) after ``pods`` allocations."""
    import ipaddress

    from pycalico.core.resources.ipam import BlockAffinity
    from pycalico.plugins.ipam.calico_ipam import IPAM

    ds = _etcd.connect(endpoint, timeout_seconds=30)
    try:
        ipam = IPAM(ds, node)
        got = {str(i.ip) for p in range(pods) for i in ipam.auto_assign(f"{node}-pod{p}", {"pod": f"pod{p}"}).all}
        assert len(got) == pods
        blocks = [a.spec.cidr for a in ds.list(BlockAffinity.KIND).items if a.spec.node == node]
        return len(blocks), sum(ipaddress.ip_network(c).num_addresses for c in blocks)
    finally:
        ds.close()


def host_local_held(cni_path: str, data_dir: Path, node_index: int, pods: int) -> tuple[int, int]:
    """(addresses host-local handed out, addresses of the node's pod CIDR) after ``pods`` ADDs,
    through the host-local mode's delegate (usePodCidr replaced by the node's /24)."""
    import ipaddress

    from pycalico.plugins.ipam.host_local import delegate, replace_pod_cidrs

    cidr = f"10.{100 + node_index // 256}.{node_index % 256}.0/{HOST_LOCAL_CIDR_BITS}"
    netconf = {"cniVersion": "1.0.0", "name": f"density{node_index}",
               "ipam": {"type": "host-local", "subnet": "usePodCidr", "dataDir": str(data_dir)}}
    handed = set()
    for p in range(pods):
        env = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": f"n{node_index}p{p}", "CNI_NETNS": "/var/run/netns/x",
               "CNI_IFNAME": "eth0", "CNI_PATH": cni_path, "PATH": os.environ.get("PATH", "")}
        conf = replace_pod_cidrs(netconf, lambda: (cidr, ""))
        result = delegate(conf, env)  # no usePodCidr left: no datastore needed
        handed |= {ip["address"] for ip in result["ips"]}
    assert len(handed) == pods
    return len(handed), ipaddress.ip_network(cidr).num_addresses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pods", default="10,30,110", help="pods per node (110: Kubernetes' default maximum)")
    args = parser.parse_args()
    counts = [int(x) for x in args.pods.split(",")]
    cni_path = os.environ.get("CNI_PATH", "/usr/lib/cni")
    if not os.access(os.path.join(cni_path, "host-local"), os.X_OK):
        raise SystemExit(f"no host-local in {cni_path} (Debian package containernetworking-plugins)")

    from pycalico.core.resources import load_resources

    rows = []
    data_dir = Path(tempfile.mkdtemp(prefix="pycalico-ipam-density-"))
    try:
        with _etcd.LocalEtcd("pycalico-ipam-rates-") as etcd:
            ds = _etcd.connect(etcd.endpoint, timeout_seconds=30)
            ds.create(load_resources(POOL)[0])
            ds.close()
            for i, pods in enumerate(counts):
                blocks, calico = calico_ipam_held(etcd.endpoint, f"node-{pods}", pods)
                handed, host_local = host_local_held(cni_path, data_dir, i, pods)
                rows.append((pods, blocks, calico, handed, host_local))
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)

    pool = 2 ** 16
    heads = ["pods", "calico-ipam held", "blocks", "nodes per /16", "host-local held", "used", "nodes per /16",
             "host-local / calico-ipam"]
    table = [[str(pods), str(calico), f"{blocks} x /26", str(pool // calico), str(host_local), str(handed),
              str(pool // host_local), f"{host_local / calico:.2f}"]
             for pods, blocks, calico, handed, host_local in rows]
    widths = [max(len(h), *(len(r[i]) for r in table)) for i, h in enumerate(heads)]
    print("addresses held per node: calico-ipam (/26 blocks affine to the node) vs host-local (a /24 per node)")
    for line in [heads, *table]:
        print("  ".join(cell.rjust(w) for cell, w in zip(line, widths)))
    print(json.dumps({"pods": [r[0] for r in rows], "calico_ipam": [r[2] for r in rows],
                      "host_local": [r[4] for r in rows]}))


if __name__ == "__main__":
    main()
