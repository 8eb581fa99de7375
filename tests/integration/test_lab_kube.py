"""``calico-lab apply`` / ``delete`` / ``label`` and ``pod add --ports``: the lab plays Kubernetes.

Through the CLI against a one-node lab with real etcd: Kubernetes objects land in etcd as
the Calico resources kube-controllers would write (``kns.``/``ksa.`` profiles,
``knp.default.`` policies), Calico resources as calicoctl would write them; labels change
in place; a bad manifest is refused whole, naming the bad field.
"""

from __future__ import annotations

import json

import pytest

from pycalico.core.datastore import NotFound
from pycalico.core.lab.cli import main as cli_main
from pycalico.core.lab.pods import with_datastore

pytestmark = pytest.mark.lab

MANIFEST = """
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {team: red}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: robot, namespace: shop, labels: {role: bot}}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web, namespace: shop}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
  - from: [{namespaceSelector: {matchLabels: {team: blue}}}]
    ports: [{port: http}, {port: 443, protocol: TCP}]
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: allow-dns}
spec:
  selector: all()
  types: [Egress]
  egress: [{action: Allow, protocol: UDP, destination: {ports: [53]}}]
"""


def run(lab, capsys, *argv: str) -> tuple[int, str, str]:
    code = cli_main([*argv, "--name", lab.name, "--state-dir", str(lab.state_dir.parent)])
    out = capsys.readouterr()
    return code, out.out, out.err


def read(lab, kind: str, name: str, namespace: str | None = None):
    def get(ds):
        try:
            return ds.get(kind, name, namespace)
        except NotFound:
            return None

    return with_datastore(lab, lab.nodes[0], get)


def test_apply_writes_what_kube_controllers_would(make_lab, tmp_path, capsys):
    lab = make_lab(nodes=1)
    manifest = tmp_path / "m.yaml"
    manifest.write_text(MANIFEST)
    code, out, err = run(lab, capsys, "apply", "-f", str(manifest))
    assert (code, err) == (0, "")
    assert out.splitlines() == ["namespace/shop created", "serviceaccount/robot created",
                                "networkpolicy.networking.k8s.io/web created",
                                "globalnetworkpolicy.projectcalico.org/allow-dns created"]

    ns = read(lab, "Profile", "kns.shop")
    assert ns.spec.labels_to_apply == {"pcns.team": "red", "pcns.kubernetes.io/metadata.name": "shop",
                                       "pcns.projectcalico.org/name": "shop"}
    assert [r.action for r in ns.spec.ingress] == ["Allow"] and [r.action for r in ns.spec.egress] == ["Allow"]
    assert read(lab, "Profile", "ksa.shop.robot").spec.labels_to_apply == {
        "pcsa.role": "bot", "pcsa.projectcalico.org/name": "robot"}
    assert read(lab, "Profile", "ksa.shop.default") is not None  # every namespace has one
    np = read(lab, "NetworkPolicy", "knp.default.web", "shop")
    assert (np.spec.order, np.spec.selector, np.spec.types) == (
        1000.0, "projectcalico.org/orchestrator == 'k8s' && app == 'web'", ("Ingress",))
    (rule,) = np.spec.ingress
    assert (rule.action, rule.protocol, rule.source.namespace_selector, rule.destination.ports) == (
        "Allow", "TCP", "team == 'blue'", ("http", 443))
    assert read(lab, "GlobalNetworkPolicy", "allow-dns") is not None

    # Applying again changes nothing; a changed object is updated in place.
    assert run(lab, capsys, "apply", "-f", str(manifest))[1].split("\n")[0] == "namespace/shop unchanged"
    manifest.write_text(MANIFEST.replace("team: red", "team: green"))
    assert "namespace/shop configured" in run(lab, capsys, "apply", "-f", str(manifest))[1]
    assert read(lab, "Profile", "kns.shop").spec.labels_to_apply["pcns.team"] == "green"

    # Deleting the namespace takes its service accounts and policies with it.
    code, out, _ = run(lab, capsys, "delete", "-f", str(manifest))
    assert code == 0 and out.splitlines()[0] == "namespace/shop deleted"
    for kind, name, namespace in (("Profile", "kns.shop", None), ("Profile", "ksa.shop.default", None),
                                  ("NetworkPolicy", "knp.default.web", "shop"),
                                  ("GlobalNetworkPolicy", "allow-dns", None)):
        assert read(lab, kind, name, namespace) is None, name
    code, out, _ = run(lab, capsys, "delete", "-f", str(manifest))
    assert code == 1 and "namespace/shop not found" in out


def test_a_bad_manifest_is_refused_whole(make_lab, tmp_path, capsys):
    lab = make_lab(nodes=1)
    manifest = tmp_path / "bad.yaml"
    manifest.write_text(MANIFEST.replace("port: 443", "port: 70000").replace("name: robot", "name: Robot")
                        + "---\napiVersion: v1\nkind: Pod\nmetadata: {name: p}\n")
    code, out, err = run(lab, capsys, "apply", "-f", str(manifest))
    assert code == 1 and out == ""
    assert f"{manifest} document 2: ServiceAccount Robot: metadata.name: 'Robot' is not a valid name" in err
    assert f"{manifest} document 3: NetworkPolicy web: spec.ingress[0].ports[1].port: must be between 1 and " \
           "65535, got 70000" in err
    assert f"{manifest} document 5: v1 Pod: the lab takes Calico resources" in err
    assert read(lab, "Profile", "kns.shop") is None  # nothing was written


def test_labels_and_named_ports(make_lab, capsys):
    lab = make_lab(nodes=1)
    code, out, err = run(lab, capsys, "pod", "add", lab.nodes[0].name, "shop/web-0", "--labels", "app=web",
                         "--ports", "http=8080,dns=53/udp")
    assert code == 0, err
    # The pod's namespace and service account exist as Kubernetes would have them.
    assert read(lab, "Profile", "kns.shop").spec.labels_to_apply["pcns.kubernetes.io/metadata.name"] == "shop"

    def wep():
        items = with_datastore(lab, lab.nodes[0], lambda ds: ds.list("WorkloadEndpoint", namespace="shop").items)
        (only,) = items
        return only

    ports = sorted((p.name, p.protocol, p.port) for p in wep().spec.ports)
    assert ports == [("dns", "UDP", 53), ("http", "TCP", 8080)]

    assert run(lab, capsys, "label", "pod/shop/web-0", "tier=front", "app-")[1] == "pod/web-0 labeled\n"
    assert wep().metadata.labels == {"tier": "front", "projectcalico.org/namespace": "shop",
                                     "projectcalico.org/orchestrator": "k8s",
                                     "projectcalico.org/serviceaccount": "default"}
    code, out, _ = run(lab, capsys, "pod", "list", "--json")
    assert json.loads(out)[0]["labels"] == {"tier": "front"}

    assert run(lab, capsys, "label", "ns/shop", "team=blue")[1] == "namespace/shop labeled\n"
    assert read(lab, "Profile", "kns.shop").spec.labels_to_apply["pcns.team"] == "blue"
    assert run(lab, capsys, "label", "ns/shop", "team=blue")[1] == "namespace/shop not labeled\n"
    run(lab, capsys, "label", "ns/shop", "team-")
    assert "pcns.team" not in read(lab, "Profile", "kns.shop").spec.labels_to_apply

    for argv, message in ((("label", "ns/shop", "bad key=x"), "labels.bad key: 'bad key': the name part must consist"),
                          (("label", "pod/shop/nope", "a=b"), "has no pod 'shop/nope'"),
                          (("label", "svc/shop", "a=b"), "name a namespace (ns/NAME) or a pod"),
                          (("label", "ns/none", "a=b"), "namespace 'none' not found"),
                          (("pod", "add", lab.nodes[0].name, "shop/web-1", "--ports", "http"),
                           "--ports: 'http' is not NAME=PORT[/PROTOCOL]")):
        code, _, err = run(lab, capsys, *argv)
        assert code == 1 and message in err, (argv, err)

    ns_file = lab.state_dir / "ns.yaml"
    ns_file.write_text("apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n")
    code, _, err = run(lab, capsys, "delete", "-f", str(ns_file))
    assert code == 1 and "still has pods in it (shop/web-0)" in err
