"""Shared by datastore_sync.py and watch_throughput.py: the Kubernetes datastore (KDD)
side of the benchmarks.

KDD runs against ``tests/kubeapi``, the repository's in-memory kube-apiserver
stand-in (TEST CODE, written in Python; a real kube-apiserver cannot be installed on
these machines). It runs in its own process (``python _kdd.py --serve``), so that
its request handling does not share a GIL with the client being measured, and is
populated there with realistic Pods put straight into its store (as its create and
a kubelet's status update would leave them; no HTTP). Every KDD number therefore
includes the stand-in's own serving cost, which is the same for the plugin and for
its floor; the ratio to the floor is the meaningful part.

In KDD a WorkloadEndpoint is a Pod: scheduled to a node, not host-networked, with its
IPs in ``status.podIPs`` (and the CNI plugin's ``cni.projectcalico.org/*``
annotations), which ``plugins/datastore/kubernetes/convert.pod_to_wep`` turns into
the WorkloadEndpoint ``<node>-k8s-<pod>-eth0``.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TESTS = REPO / "tests"
TOKEN = "pycalico-bench-token"
NAMESPACES = tuple(f"team-{i:02d}" for i in range(20))
NOTE = ("KDD numbers are against tests/kubeapi, the repo's in-memory Python kube-apiserver stand-in "
        "(test code, not a real API server), running in its own process: they include its serving cost")

_APPS = ["web", "api", "cache", "db", "worker", "frontend", "payments", "search"]
_T0 = "2026-05-01T10:00:00Z"


def pods(count: int, seed: int = 7) -> list[dict]:
    """``count`` Pods as a Deployment's ReplicaSet, the scheduler, the kubelet and
    Calico's CNI plugin leave them (about 3.5 KB of JSON each; no managedFields,
    which the stand-in does not keep), spread over 100 nodes and 20 namespaces, like
    the etcd benchmark's WorkloadEndpoints."""
    rng = random.Random(seed)
    out = []
    for i in range(count):
        ns = NAMESPACES[i % len(NAMESPACES)]
        app = _APPS[i % len(_APPS)]
        node = f"node-{i % 100:03d}"
        template = f"{rng.getrandbits(40):010x}"
        name = f"{app}-{template}-{rng.getrandbits(20):05x}"
        ip = f"10.{64 + i // 65536}.{i // 256 % 256}.{i % 256}"
        host_ip = f"192.168.0.{10 + i % 100}"
        container_id = f"{rng.getrandbits(256):064x}"
        image = f"registry.example.com/{ns}/{app}:1.{i % 7}.3"
        volume = f"kube-api-access-{rng.getrandbits(25):05x}"
        conditions = [{"type": t, "status": "True", "lastProbeTime": None, "lastTransitionTime": _T0}
                      for t in ("PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady", "PodScheduled")]
        out.append({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "generateName": f"{app}-{template}-",
                "namespace": ns,
                "labels": {"app": app, "pod-template-hash": template, "tier": "backend" if i % 3 else "frontend"},
                "annotations": {
                    "cni.projectcalico.org/containerID": container_id,
                    "cni.projectcalico.org/podIP": f"{ip}/32",
                    "cni.projectcalico.org/podIPs": f"{ip}/32",
                },
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": f"{app}-{template}",
                                     "uid": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                                     "controller": True, "blockOwnerDeletion": True}],
            },
            "spec": {
                "nodeName": node,
                "serviceAccountName": "default",
                "containers": [{
                    "name": app,
                    "image": image,
                    "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"},
                              {"name": "metrics", "containerPort": 9090, "protocol": "TCP"}],
                    "env": [{"name": "LOG_LEVEL", "value": "info"},
                            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"apiVersion": "v1",
                                                                            "fieldPath": "metadata.name"}}}],
                    "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}},
                    "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080, "scheme": "HTTP"},
                                       "periodSeconds": 10, "timeoutSeconds": 1, "successThreshold": 1,
                                       "failureThreshold": 3},
                    "volumeMounts": [{"name": volume, "readOnly": True,
                                      "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}],
                }],
                "volumes": [{"name": volume, "projected": {"defaultMode": 420, "sources": [
                    {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                    {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                    {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {
                        "apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
                ]}}],
                "tolerations": [{"key": f"node.kubernetes.io/{t}", "operator": "Exists", "effect": "NoExecute",
                                 "tolerationSeconds": 300} for t in ("not-ready", "unreachable")],
                "priority": 0,
                "preemptionPolicy": "PreemptLowerPriority",
            },
            "status": {
                "phase": "Running",
                "conditions": conditions,
                "hostIP": host_ip,
                "hostIPs": [{"ip": host_ip}],
                "podIP": ip,
                "podIPs": [{"ip": ip}],
                "startTime": _T0,
                "containerStatuses": [{
                    "name": app, "ready": True, "restartCount": 0, "started": True, "image": image,
                    "imageID": f"{image.rsplit(':', 1)[0]}@sha256:{rng.getrandbits(256):064x}",
                    "containerID": f"containerd://{container_id}",
                    "state": {"running": {"startedAt": _T0}}, "lastState": {},
                }],
                "qosClass": "Burstable",
            },
        })
    return out


# --- the stand-in, in its own process ---------------------------------------------------


class StandIn:
    """``tests/kubeapi``'s KubeAPIServer in a child process holding ``count`` Pods;
    ``kubeconfig`` points at it (bearer-token auth). Stopped by its pid on exit."""

    def __init__(self, count: int, bookmark_interval: float = 1.0):
        self.count, self.bookmark_interval = count, bookmark_interval
        self.dir = Path(tempfile.mkdtemp(prefix="pycalico-bench-kdd-"))
        self.kubeconfig = self.dir / "kubeconfig"
        self.proc: subprocess.Popen | None = None
        self.url = ""
        self.populate_seconds = 0.0

    def __enter__(self) -> StandIn:
        log = open(self.dir / "standin.log", "wb")
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--serve", str(self.count), str(self.bookmark_interval), str(self.kubeconfig)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, start_new_session=True,
        )
        log.close()
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait(10)
            why = (self.dir / "standin.log").read_text()[-3000:]
            self.__exit__(None, None, None)
            raise RuntimeError(f"the API server stand-in did not start: {why}")
        ready = json.loads(line)
        self.url, self.populate_seconds = ready["url"], ready["populate_seconds"]
        return self

    def __exit__(self, *exc) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)

    def api_client(self):
        """A ``kubernetes`` client ApiClient for the stand-in (through the kubeconfig)."""
        from kubernetes import client, config

        cfg = client.Configuration()
        config.load_kube_config(config_file=str(self.kubeconfig), client_configuration=cfg, persist_config=False)
        return client.ApiClient(cfg)


def _serve(count: int, bookmark_interval: float, kubeconfig: str) -> None:
    """The stand-in process: start, populate its store, announce (one JSON line on
    stdout), serve until stdin closes or the parent kills it."""
    sys.path.insert(0, str(TESTS))
    from kubeapi import KubeAPIServer
    from kubeapi.registry import Target

    server = KubeAPIServer(token=TOKEN, bookmark_interval=bookmark_interval, rv_wait=3.0).start()
    reg, types = server.registry, server.types
    began = time.perf_counter()
    for ns in NAMESPACES:
        reg.create(Target(types.get("namespaces"), "v1"), json.dumps({"metadata": {"name": ns}}).encode(), {})
    # What the registry's create and the kubelet's status update leave stored, put in
    # one write per pod (the full create + update path copies a pod ~10 times).
    pod_type = types.get("pods")
    for pod in pods(count):
        status = pod.pop("status")
        obj = reg._clean(pod_type, pod)
        meta = obj["metadata"]
        meta.update(uid=str(uuid.uuid4()), creationTimestamp=_T0, generation=1)
        pod_type.strategy.prepare_create(obj, "v1")
        obj["status"] = status
        server.store.put(pod_type.id, meta["namespace"], meta["name"], obj)
    populate_seconds = time.perf_counter() - began
    server.write_kubeconfig(kubeconfig)
    print(json.dumps({"url": server.url, "populate_seconds": populate_seconds}), flush=True)
    sys.stdin.read()  # until the parent closes it, or kills us
    server.stop()


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve"] and len(sys.argv) == 5:
        _serve(int(sys.argv[2]), float(sys.argv[3]), sys.argv[4])
    else:
        sys.exit("usage: _kdd.py --serve COUNT BOOKMARK_INTERVAL KUBECONFIG (run by the benchmarks)")
