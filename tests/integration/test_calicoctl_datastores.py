"""calicoctl as an operator runs it: the installed executable, in a subprocess, against
a real etcd found through Calico's environment variables or a calico.toml."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from etcd_fixtures import free_ports
from pycalico.core.resources.codec import YamlLoader
from pycalico.core.resources.types import as_number_value

MANIFESTS = Path(__file__).resolve().parents[1] / "data" / "manifests"
DOCS_EXAMPLES = [
    "ippool.yaml",
    "bgpconfiguration.yaml",
    "bgppeer.yaml",
    "networkpolicy.yaml",
    "globalnetworkpolicy.yaml",
    "hostendpoint.yaml",
    "felixconfiguration.yaml",
]
CALICOCTL = Path(sys.executable).with_name("calicoctl")
CALICO_VARS = ("CALICO_CONFIG", "DATASTORE_TYPE", "ETCD_ENDPOINTS", "ETCD_CA_CERT_FILE", "ETCD_CERT_FILE",
               "ETCD_KEY_FILE", "ETCD_USERNAME", "ETCD_PASSWORD", "KUBECONFIG")


def runner(tmp_path, env_vars: dict, config_text: str):
    """``run(*args, via="env"|"config", stdin=...)`` -> CompletedProcess: calicoctl finding
    its datastore through Calico's environment variables or a calico.toml."""
    assert CALICOCTL.exists(), f"{CALICOCTL} is not installed (pip install -e .)"
    config = tmp_path / "calico.toml"
    config.write_text(config_text)
    base = {k: v for k, v in os.environ.items() if k not in CALICO_VARS}

    def run(*args: str, via: str = "env", stdin: str | None = None, env: dict | None = None):
        environ = dict(base)
        argv = [str(CALICOCTL), *args]
        if via == "env":
            environ.update(env_vars)
        elif via == "config":
            argv += ["--config", str(config)]
        environ.update(env or {})
        began = time.monotonic()
        done = subprocess.run(argv, input=stdin, capture_output=True, text=True, env=environ, timeout=60)
        run.durations.append(time.monotonic() - began)
        assert "Traceback" not in done.stderr, done.stderr
        return done

    run.durations = []
    run.config = config
    return run


@pytest.fixture
def calicoctl(etcd_server, tmp_path):
    return runner(
        tmp_path,
        {"ETCD_ENDPOINTS": etcd_server.endpoint},
        f'[datastore]\ntype = "etcd"\n\n[datastore.etcd]\nendpoints = ["{etcd_server.endpoint}"]\n',
    )


@pytest.fixture(params=["etcd", "kubernetes"])
def any_calicoctl(request, tmp_path):
    """calicoctl on each datastore: a real etcd, or the Kubernetes API stand-in."""
    if request.param == "etcd":
        return request.getfixturevalue("calicoctl")
    request.getfixturevalue("kdd_datastore")  # CRDs installed, the manifests' namespaces made
    kubeconfig = request.getfixturevalue("kdd_kubeconfig")
    return runner(
        tmp_path,
        {"DATASTORE_TYPE": "kubernetes", "KUBECONFIG": str(kubeconfig)},
        f'[datastore]\ntype = "kubernetes"\n\n[datastore.kubernetes]\nkubeconfig = "{kubeconfig}"\n',
    )


def documents(path: Path) -> list[dict]:
    return [d for d in yaml.load_all(path.read_text(), Loader=YamlLoader) if d]


def assert_kept(original, dumped, path: str = "") -> None:
    """Every key of ``original`` is in ``dumped`` with the same value (defaults may be added)."""
    if isinstance(original, dict):
        assert isinstance(dumped, dict), path
        for key, value in original.items():
            assert key in dumped, f"{path}.{key} was lost"
            assert_kept(value, dumped[key], f"{path}.{key}")
    elif isinstance(original, list):
        assert isinstance(dumped, list) and len(dumped) == len(original), path
        for i, (a, b) in enumerate(zip(original, dumped)):
            assert_kept(a, b, f"{path}[{i}]")
    elif path.endswith("asNumber") or path.endswith("ASNumber"):
        # Calico's CRDs hold AS numbers as integers, so KDD gives the dotted "1.10" back
        # as 65546, the same number (as Calico's own calicoctl prints it).
        assert as_number_value(original) == as_number_value(dumped), path
    else:
        assert original == dumped, f"{path}: {original!r} came back as {dumped!r}"


@pytest.mark.parametrize("via", ["env", "config"])
def test_docs_examples_round_trip(any_calicoctl, tmp_path, via):
    calicoctl = any_calicoctl
    originals = []
    if via == "env":  # one file at a time
        for name in DOCS_EXAMPLES:
            docs = documents(MANIFESTS / name)
            kind = docs[0]["kind"]
            done = calicoctl("apply", "-f", str(MANIFESTS / name), via=via)
            assert (done.returncode, done.stdout, done.stderr) == (
                0, f"Successfully applied {len(docs)} '{kind}' resource(s)\n", ""
            ), name
            originals += docs
    else:  # all at once, as a directory
        directory = tmp_path / "manifests"
        directory.mkdir()
        for name in DOCS_EXAMPLES:
            shutil.copy(MANIFESTS / name, directory / name)
            originals += documents(MANIFESTS / name)
        done = calicoctl("apply", "-f", str(directory), via=via)
        assert (done.returncode, done.stdout, done.stderr) == (
            0, f"Successfully applied {len(originals)} resource(s)\n", ""
        )

    kinds = sorted({d["kind"] for d in originals})
    for kind in kinds:
        every = ["-A"] if kind == "NetworkPolicy" else []
        done = calicoctl("get", kind.lower(), *every, "-o", "yaml", via=via)
        assert done.returncode == 0, done.stderr
        listed = yaml.load(done.stdout, Loader=YamlLoader)
        assert listed["kind"] == f"{kind}List"
        assert listed["metadata"]["resourceVersion"]  # opaque, as in Kubernetes
        stored = {(i["metadata"].get("namespace", ""), i["metadata"]["name"]): i for i in listed["items"]}
        mine = [d for d in originals if d["kind"] == kind]
        assert len(stored) == len(mine)
        for original in mine:
            key = (original["metadata"].get("namespace", ""), original["metadata"]["name"])
            assert_kept(original, stored[key], f"{kind} {key}")

    # One resource by name comes back bare, and can be applied again unchanged.
    done = calicoctl("get", "networkpolicy", "web-ingress", "-n", "web", "-o", "yaml", via=via)
    one = yaml.load(done.stdout, Loader=YamlLoader)
    assert one["kind"] == "NetworkPolicy" and one["metadata"]["namespace"] == "web"
    done = calicoctl("apply", "-f", "-", stdin=done.stdout, via=via)
    assert done.stdout == "Successfully applied 1 'NetworkPolicy' resource(s)\n"


def test_tables_delete_and_errors(calicoctl, tmp_path):
    calicoctl("apply", "-f", str(MANIFESTS / "ippool.yaml"))
    done = calicoctl("get", "ippools", "-o", "wide")
    assert done.stdout.splitlines() == [
        "NAME                  CIDR                  NAT     IPIPMODE      VXLANMODE   DISABLED   "
        "DISABLEBGPEXPORT   SELECTOR     ",
        "default-ipv6-ippool   fd5f:a4e3:1c2b::/48   false   Never         Never       false      "
        "false              !has(edge)   ",
        "my.ippool-1           10.1.0.0/16           true    CrossSubnet   Never       false      "
        "false              all()        ",
        "",
    ]
    done = calicoctl("create", "-f", str(MANIFESTS / "ippool.yaml"))
    assert done.returncode == 1
    assert done.stderr == (
        "Failed to create any 'IPPool' resources: [resource already exists: IPPool(my.ippool-1) "
        "resource already exists: IPPool(default-ipv6-ippool)]\n"
    )
    done = calicoctl("delete", "ippool", "my.ippool-1", "nope")
    assert (done.returncode, done.stdout, done.stderr) == (
        1,
        "Successfully deleted 1 'IPPool' resource(s)\n",
        "Failed to delete 'IPPool' resource: resource does not exist: IPPool(nope) with error: <nil>\n\n",
    )
    done = calicoctl("get", "ippool", "my.ippool-1")
    assert (done.returncode, done.stdout, done.stderr) == (
        1, "", "resource does not exist: IPPool(my.ippool-1) with error: <nil>\n"
    )


def test_bad_manifest_applies_nothing(calicoctl, tmp_path):
    bad = tmp_path / "bad.yaml"
    good = (MANIFESTS / "ippool.yaml").read_text()
    bad.write_text(good + "---\n" + good.replace("cidr: 10.1.0.0/16", "cidr: 10.1.0.0/33").replace("my.ippool-1", "p3"))
    done = calicoctl("apply", "-f", str(bad))
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.startswith(f"Failed to execute command: {bad} document 3, IPPool \"p3\": spec.cidr:")
    done = calicoctl("get", "ippool", "-o", "yaml")
    assert yaml.safe_load(done.stdout)["items"] == []


def test_unreachable_etcd_is_one_line(calicoctl):
    (port,) = free_ports(1)
    for args in (["get", "ippool"], ["apply", "-f", str(MANIFESTS / "ippool.yaml")]):
        done = calicoctl(*args, via="none", env={"ETCD_ENDPOINTS": f"http://127.0.0.1:{port}"})
        assert done.returncode == 1
        lines = (done.stdout + done.stderr).splitlines()
        assert len(lines) == 1 and lines[0].startswith("Failed to create Calico API client: "), lines
    done = calicoctl("get", "ippool", via="none", env={"DATASTORE_TYPE": "consul"})
    assert done.returncode == 1
    assert done.stdout.startswith("Failed to create Calico API client: environment: DATASTORE_TYPE: must be")


def test_version_reads_cluster_information(calicoctl, etcd_server):
    done = calicoctl("version")
    assert done.returncode == 1
    assert done.stdout.startswith("Client Version:    v")
    assert done.stderr == (
        "Unable to retrieve Cluster Version or Type: resource does not exist: "
        "ClusterInformation(default) with error: <nil>\n"
    )
    from pycalico.core.resources.codec import load_resources
    from pycalico.plugins.datastore.etcd import Options, connect

    text = (MANIFESTS / "clusterinformation.yaml").read_text()
    (info,) = load_resources(text.replace('  resourceVersion: "862"\n', ""))
    store = connect(Options(endpoints=(etcd_server.endpoint,)))
    try:
        store.create(info)
    finally:
        store.close()
    done = calicoctl("version", via="config")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[2:] == ["Cluster Version:   v3.28.0", "Cluster Type:      k8s,bgp,kubeadm,kdd"]
    # That cluster runs another version: resource commands refuse, as Calico's do.
    done = calicoctl("get", "ippool")
    assert done.returncode == 1 and "Version mismatch." in done.stderr
    assert calicoctl("get", "ippool", "--allow-version-mismatch").returncode == 0


def test_startup_cost(calicoctl):
    """Not a benchmark: a guard that calicoctl stays quick enough to script in loops."""
    calicoctl("apply", "-f", str(MANIFESTS / "ippool.yaml"))
    calicoctl.durations.clear()
    for _ in range(3):
        assert calicoctl("get", "ippool").returncode == 0
    assert min(calicoctl.durations) < 3.0, calicoctl.durations
    began = time.monotonic()
    assert calicoctl("--help", via="none").returncode == 0
    assert time.monotonic() - began < 2.0



def test_crds_prints_the_shipped_manifests(kube_apiserver, kdd_kubeconfig):
    done = subprocess.run([str(CALICOCTL), "crds"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    crds = [d for d in yaml.safe_load_all(done.stdout) if d]
    assert {d["kind"] for d in crds} == {"CustomResourceDefinition"}
    names = {d["metadata"]["name"] for d in crds}
    assert {"ippools.crd.projectcalico.org", "ipamblocks.crd.projectcalico.org"} <= names and len(names) == 18
    # They are what the KDD plugin installs: an API server accepts every one.
    from kubernetes import client, config

    api = client.ApiextensionsV1Api(config.new_client_from_config(str(kdd_kubeconfig)))
    for crd in crds:
        api.create_custom_resource_definition(crd)
    assert len(api.list_custom_resource_definition().items) == 18
