"""pytest fixtures for the Kubernetes datastore (KDD) plugin, run against the API
server stand-in of tests/kubeapi (a kube-apiserver cannot be installed on these
machines). Loaded as a plugin (``pytest_plugins = ["kdd_fixtures"]`` or
``-p kdd_fixtures``).

Fixtures:

* ``kube_apiserver``: a fresh stand-in on a free loopback port, with bearer-token
  auth, bookmarks every 0.2 s; stopped when the test ends (``.fail(True/False)``,
  ``.compact()``, ``.registry`` for writes that bypass HTTP).
* ``kdd_kubeconfig``: a kubeconfig file for it.
* ``kdd_datastore``: the plugin's Datastore connected through that kubeconfig, with
  the CRDs installed and the namespaces the sample manifests use created; closed
  when the test ends.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from kubeapi import KubeAPIServer

TOKEN = "kdd-test-token"
MANIFESTS = Path(__file__).resolve().parent / "data" / "manifests"


def manifest_namespaces() -> list[str]:
    """The namespaces the sample manifests put resources in (they must exist in
    Kubernetes before anything namespaced is created there)."""
    found = set()
    for path in sorted(MANIFESTS.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            ns = ((doc or {}).get("metadata") or {}).get("namespace")
            if ns:
                found.add(ns)
    return sorted(found)


def ensure_namespaces(store, names) -> None:
    from pycalico.plugins.datastore.kubernetes import ApiError

    for name in names:
        try:
            store.api.request("POST", "/api/v1/namespaces", body={"apiVersion": "v1", "kind": "Namespace",
                                                                  "metadata": {"name": name}})
        except ApiError as exc:
            if exc.status != 409:
                raise


@pytest.fixture
def kube_apiserver() -> Iterator[KubeAPIServer]:
    server = KubeAPIServer(token=TOKEN, bookmark_interval=0.2, rv_wait=0.5).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def kdd_kubeconfig(kube_apiserver: KubeAPIServer, tmp_path: Path) -> Path:
    return kube_apiserver.write_kubeconfig(tmp_path / "kubeconfig")


def kdd_config_text(kubeconfig: Path | str, node_name: str = "") -> str:
    """A calico.toml whose datastore is the KDD plugin reading ``kubeconfig``."""
    head = f"node_name = {json.dumps(node_name)}\n\n" if node_name else ""
    return f'{head}[datastore]\ntype = "kubernetes"\n\n[datastore.kubernetes]\nkubeconfig = {json.dumps(str(kubeconfig))}\n'


def open_kdd(kubeconfig: Path, timeout: float = 5.0):
    from pycalico.plugins.datastore.kubernetes import Options, connect

    return connect(Options(kubeconfig=str(kubeconfig), timeout_seconds=timeout))


@pytest.fixture
def kdd_datastore(kube_apiserver: KubeAPIServer, kdd_kubeconfig: Path) -> Iterator[object]:
    """The KDD plugin's Datastore on a fresh stand-in, CRDs installed."""
    from pycalico.plugins.datastore.kubernetes import install_crds

    store = open_kdd(kdd_kubeconfig)
    try:
        install_crds(store)
        ensure_namespaces(store, manifest_namespaces())
        yield store
    finally:
        store.close()
