"""KDD: the plugin as the core finds it (entry point ``kubernetes`` of
``pycalico.datastore``), configured from calico.toml or Calico's environment."""

from __future__ import annotations

import socket

import pytest
import yaml

from pycalico.core.client import open_datastore
from pycalico.core.config import ConfigError
from pycalico.core.datastore import DatastoreUnavailable
from pycalico.plugins.datastore.kubernetes import KubernetesDatastore, Options, connect


def write_toml(tmp_path, table: str):
    path = tmp_path / "calico.toml"
    path.write_text(f'[datastore]\ntype = "kubernetes"\n\n[datastore.kubernetes]\n{table}\n')
    return path


def test_calico_toml_selects_and_configures_the_plugin(kube_apiserver, kdd_kubeconfig, tmp_path):
    path = write_toml(tmp_path, f'kubeconfig = "{kdd_kubeconfig}"\ntimeout_seconds = 3')
    store = open_datastore(path)
    try:
        assert isinstance(store, KubernetesDatastore)
        assert store.api.where == kube_apiserver.url and store.api.timeout == 3
        assert store.get("Profile", "kns.default").name == "kns.default"
    finally:
        store.close()


def test_calicos_environment_selects_the_plugin(kube_apiserver, kdd_kubeconfig):
    env = {"DATASTORE_TYPE": "kubernetes", "KUBECONFIG": str(kdd_kubeconfig)}
    store = open_datastore(None, env)
    try:
        assert isinstance(store, KubernetesDatastore) and store.api.where == kube_apiserver.url
    finally:
        store.close()


def test_bad_options_are_refused_with_their_toml_paths(tmp_path):
    with pytest.raises(ConfigError) as info:
        open_datastore(write_toml(tmp_path, 'kubeconfig = "/nonexistent/kubeconfig"'))
    text = str(info.value)
    assert "datastore.kubernetes.kubeconfig: no such file: /nonexistent/kubeconfig" in text
    with pytest.raises(ConfigError, match="datastore.kubernetes.timeout_seconds"):
        open_datastore(write_toml(tmp_path, "timeout_seconds = 0"))
    with pytest.raises(ConfigError, match="datastore.kubernetes.endpoints"):
        open_datastore(write_toml(tmp_path, 'endpoints = ["http://x"]'))


def test_context_picks_the_cluster(kube_apiserver, kdd_kubeconfig, tmp_path):
    config = yaml.safe_load(kdd_kubeconfig.read_text())
    config["clusters"].append({"name": "elsewhere", "cluster": {"server": "http://127.0.0.1:1"}})
    config["contexts"].append({"name": "elsewhere", "context": {"cluster": "elsewhere", "user": "kubeapi"}})
    config["current-context"] = "elsewhere"
    path = tmp_path / "two-contexts"
    path.write_text(yaml.safe_dump(config))
    store = connect(Options(kubeconfig=str(path), context="kubeapi"))
    store.close()
    assert store.api.where == kube_apiserver.url


def test_an_unreachable_server_is_unavailable_and_named(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again when the block ends: nothing listens
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
        "users": [{"name": "u", "user": {}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
    }))
    with pytest.raises(DatastoreUnavailable, match=f"127.0.0.1:{port}"):
        connect(Options(kubeconfig=str(path), timeout_seconds=1))


def test_wrong_credentials_are_not_an_outage(kube_apiserver, kdd_kubeconfig, tmp_path):
    from pycalico.plugins.datastore.kubernetes import Forbidden

    config = yaml.safe_load(kdd_kubeconfig.read_text())
    config["users"][0]["user"] = {"token": "wrong"}
    path = tmp_path / "bad-token"
    path.write_text(yaml.safe_dump(config))
    store = KubernetesDatastore(Options(kubeconfig=str(path)))
    try:
        with pytest.raises(Forbidden, match="Unauthorized"):
            store.get("IPPool", "x")
    finally:
        store.close()
