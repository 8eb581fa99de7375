"""calicoctl in-process on an in-memory Datastore: Calico's texts for every verb,
namespace rules, partial failures, manifests that apply nothing, tables and output."""

from __future__ import annotations

import functools
import io
import itertools
import json
from pathlib import Path

import attrs
import pytest
import yaml

from pycalico.core.ctl import kinds, printer
from pycalico.core.ctl import resources as res
from pycalico.core.ctl.cli import Context, UsageError, parse
from pycalico.core.ctl.kinds import go_float, join
from pycalico.core.ctl.main import COMMANDS, main
from pycalico.core.ctl.version import client_version, parse_duration
from pycalico.core.datastore import AlreadyExists, Conflict, DatastoreUnavailable, NotFound, Page
from pycalico.core.resources.codec import kind_info, load_resources, to_dict

MANIFESTS = Path(__file__).resolve().parents[1] / "data" / "manifests"


# --- an in-memory Datastore that keeps the interface's promises ----------------------------


class MemoryStore:
    """Typed resources by (kind, namespace, name); resourceVersion is a global revision;
    update/delete with a resourceVersion are compare-and-swap; typed errors name the
    resource. ``down`` makes every call raise DatastoreUnavailable; ``conflicts`` makes
    the next N updates fail with Conflict (someone else wrote first)."""

    def __init__(self) -> None:
        self.items: dict[tuple[str, str, str], object] = {}
        self.revision = 100
        self.uids = itertools.count(1)
        self.down = False
        self.conflicts = 0
        self.closed = False
        self.writes = 0

    def _check(self) -> None:
        if self.down:
            raise DatastoreUnavailable("etcd at http://127.0.0.1:1: connection refused")

    def _key(self, kind: str, name: str, namespace: str | None) -> tuple[str, str, str]:
        info = kind_info(kind)
        if info.namespaced and not namespace:
            raise ValueError(f"{info.kind} is namespaced: a namespace is required")
        return info.kind, (namespace or "") if info.namespaced else "", name

    def _stamp(self, resource, uid=None, created=None):
        self.revision += 1
        meta = attrs.evolve(
            resource.metadata,
            resource_version=str(self.revision),
            uid=uid or f"uid-{next(self.uids)}",
            creation_timestamp=created or "2024-05-01T12:00:00Z",
        )
        return attrs.evolve(resource, metadata=meta)

    def get(self, kind, name, namespace=None):
        self._check()
        key = self._key(kind, name, namespace)
        if key not in self.items:
            raise NotFound(key[0], name, namespace)
        return self.items[key]

    def list(self, kind, namespace=None, selector=None, limit=0, continue_token=None):
        self._check()
        info = kind_info(kind)
        found = [r for (k, ns, _), r in sorted(self.items.items()) if k == info.kind and namespace in (None, ns)]
        return Page(tuple(found), str(self.revision))

    def create(self, resource):
        self._check()
        key = self._key(resource.kind, resource.name, resource.metadata.namespace)
        if key in self.items:
            raise AlreadyExists(key[0], resource.name, resource.metadata.namespace)
        self.writes += 1
        self.items[key] = stored = self._stamp(resource)
        return stored

    def update(self, resource):
        self._check()
        key = self._key(resource.kind, resource.name, resource.metadata.namespace)
        if key not in self.items:
            raise NotFound(key[0], resource.name, resource.metadata.namespace)
        old = self.items[key]
        if self.conflicts:
            self.conflicts -= 1
            raise Conflict(key[0], resource.name, resource.metadata.namespace)
        rv = resource.metadata.resource_version
        if rv and rv != old.metadata.resource_version:
            raise Conflict(key[0], resource.name, resource.metadata.namespace)
        self.writes += 1
        self.items[key] = stored = self._stamp(resource, old.metadata.uid, old.metadata.creation_timestamp)
        return stored

    def delete(self, kind, name, namespace=None, resource_version=None):
        self._check()
        key = self._key(kind, name, namespace)
        if key not in self.items:
            raise NotFound(key[0], name, namespace)
        if resource_version and resource_version != self.items[key].metadata.resource_version:
            raise Conflict(key[0], name, namespace)
        self.writes += 1
        return self.items.pop(key)

    def put(self, text: str) -> None:
        """Store resources directly (as calico-node would)."""
        for resource in load_resources(text):
            self.items[self._key(resource.kind, resource.name, resource.metadata.namespace)] = self._stamp(resource)

    def names(self, kind: str) -> list[str]:
        return sorted(f"{ns}/{n}" if ns else n for k, ns, n in self.items if k == kind)

    def close(self):
        self.closed = True


@attrs.frozen
class Run:
    code: int
    out: str
    err: str


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def ctl(store):
    """``ctl("apply", "-f", path, stdin=...)`` runs calicoctl in-process on ``store``."""
    opened = []

    def run(*argv: str, stdin: str = "", env: dict | None = None, opener=None) -> Run:
        def open_datastore(path, environ):
            opened.append((path, dict(environ)))
            return store

        ctx = Context(
            stdout=io.StringIO(),
            stderr=io.StringIO(),
            stdin=io.StringIO(stdin),
            env=dict(env or {}),
            open_datastore=opener or open_datastore,
            sleep=lambda seconds: None,
        )
        code = main(list(argv), ctx)
        return Run(code, ctx.stdout.getvalue(), ctx.stderr.getvalue())

    run.opened = opened
    return run


def pool(name: str, cidr: str, **meta) -> str:
    extra = "".join(f"\n  {k}: {json.dumps(v)}" for k, v in meta.items())
    return f"apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: {name}{extra}\nspec:\n  cidr: {cidr}\n"


def netpol(name: str, namespace: str | None = None, order: float | None = None) -> str:
    ns = f"\n  namespace: {namespace}" if namespace else ""
    spec = f"\n  order: {order}" if order is not None else ""
    return (
        f"apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata:\n  name: {name}{ns}\n"
        f"spec:\n  selector: app == '{name}'{spec}\n"
    )


def docs(*parts: str) -> str:
    return "---\n".join(parts)


@pytest.fixture
def write(tmp_path):
    def write(text: str, name: str = "manifest.yaml") -> str:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return str(path)

    return write


# --- apply / create / replace: success and failure texts ---------------------------------------


def test_apply_creates_then_updates_with_calicos_summary(ctl, store, write):
    path = write(docs(pool("p1", "10.1.0.0/16"), pool("p2", "10.2.0.0/16"), pool("p3", "10.3.0.0/16")))
    assert ctl("apply", "-f", path) == Run(0, "Successfully applied 3 'IPPool' resource(s)\n", "")
    assert store.names("IPPool") == ["p1", "p2", "p3"]
    first_rv = store.get("IPPool", "p1").metadata.resource_version
    assert ctl("apply", "-f", path).out == "Successfully applied 3 'IPPool' resource(s)\n"
    stored = store.get("IPPool", "p1")
    assert stored.metadata.resource_version != first_rv
    assert stored.metadata.uid == "uid-1"  # the same object, updated in place
    assert stored.spec.block_size == 26  # Calico's defaults filled in


def test_apply_mixed_kinds_counts_resources(ctl, store, write):
    path = write(docs(pool("p1", "10.1.0.0/16"), netpol("a"), netpol("b", "web")))
    assert ctl("apply", "-f", path) == Run(0, "Successfully applied 3 resource(s)\n", "")
    assert store.names("NetworkPolicy") == ["default/a", "web/b"]


def test_apply_replaces_spec_and_merges_labels(ctl, store, write):
    ctl("apply", "-f", write(pool("p1", "10.1.0.0/16", labels={"a": "1", "b": "1"})))
    ctl("apply", "-f", write(pool("p1", "10.1.0.0/16", labels={"b": "2"}).replace("cidr", "natOutgoing: true\n  cidr")))
    stored = store.get("IPPool", "p1")
    assert stored.spec.nat_outgoing is True
    # Calico's mergeMetadataForUpdate: stored labels, the new ones laid over them.
    assert stored.metadata.labels == {"a": "1", "b": "2"}


def test_apply_with_stale_resource_version_is_a_conflict(ctl, store, write):
    ctl("apply", "-f", write(pool("p1", "10.1.0.0/16")))
    stale = write(pool("p1", "10.1.0.0/16", resourceVersion="1"))
    result = ctl("apply", "-f", stale)
    assert result == Run(1, "", "Failed to apply 'IPPool' resource: [update conflict: IPPool(p1)]\n")
    current = store.get("IPPool", "p1").metadata.resource_version
    assert ctl("apply", "-f", write(pool("p1", "10.1.0.0/16", resourceVersion=current))).code == 0


def test_update_retries_conflicts_then_gives_up(ctl, store, write):
    ctl("create", "-f", write(pool("p1", "10.1.0.0/16")))
    store.conflicts = 2
    replaced = ctl("replace", "-f", write(pool("p1", "10.1.0.0/16")))
    assert replaced.out == "Successfully replaced 1 'IPPool' resource(s)\n"
    store.conflicts = 5
    result = ctl("replace", "-f", write(pool("p1", "10.1.0.0/16")))
    assert result.code == 1
    assert result.err == "Hit error: failed to update the resource: update conflict: IPPool(p1)\n"


def test_create_success_already_exists_and_skip_exists(ctl, store, write):
    path = write(docs(pool("p1", "10.1.0.0/16"), pool("p2", "10.2.0.0/16")))
    assert ctl("create", "-f", path) == Run(0, "Successfully created 2 'IPPool' resource(s)\n", "")
    assert ctl("create", "-f", path) == Run(
        1,
        "",
        "Failed to create any 'IPPool' resources: "
        "[resource already exists: IPPool(p1) resource already exists: IPPool(p2)]\n",
    )
    one = write(pool("p1", "10.1.0.0/16"), "one.yaml")
    assert ctl("create", "-f", one).err == "Failed to create 'IPPool' resource: [resource already exists: IPPool(p1)]\n"
    assert ctl("create", "-f", path, "--skip-exists") == Run(0, "Successfully created 2 'IPPool' resource(s)\n", "")


def test_create_refuses_a_resource_version(ctl, write):
    result = ctl("create", "-f", write(pool("p1", "10.1.0.0/16", resourceVersion="12345")))
    assert result.err == (
        "Failed to create 'IPPool' resource: [error with field Metadata.ResourceVersion = '12345' "
        "(field must not be set for a Create request)]\n"
    )


def test_create_partial_success(ctl, store, write):
    ctl("create", "-f", write(pool("p2", "10.2.0.0/16"), "p2.yaml"))
    path = write(docs(pool("p1", "10.1.0.0/16"), pool("p2", "10.2.0.0/16"), pool("p3", "10.3.0.0/16")))
    result = ctl("create", "-f", path)
    assert result == Run(
        1,
        "Partial success: created the first 2 out of 3 'IPPool' resources:\n",
        "Hit error: [resource already exists: IPPool(p2)]\n",
    )
    assert store.names("IPPool") == ["p1", "p2", "p3"]  # Calico goes on after a failure


def test_apply_partial_success_and_calicos_count_rule(ctl, store, write):
    three = write(docs(netpol("a", "web"), netpol("b", "db"), netpol("c", "web")))
    result = ctl("apply", "-f", three, "-n", "web")
    assert result == Run(
        1,
        "Partial success: applied the first 2 out of 3 'NetworkPolicy' resources:\n",
        "Hit error(s): [resource namespace does not match client namespace. db != web]\n",
    )
    # One success and two failures: Calico prints no "Partial success" line then.
    result = ctl("apply", "-f", write(docs(netpol("a", "x"), netpol("b", "y"), netpol("c")), "m2.yaml"), "-n", "web")
    assert result.out == ""
    assert result.err.startswith("Hit error(s): [resource namespace does not match client namespace. x != web ")


def test_apply_mixed_kinds_partial_and_total_failure(ctl, store, write):
    netset = "apiVersion: projectcalico.org/v3\nkind: NetworkSet\nmetadata:\n  name: s\nspec:\n  nets: [10.0.0.0/8]\n"
    mixed = write(docs(netpol("a", "x"), netset, netpol("b", "y")))
    result = ctl("apply", "-f", mixed, "-n", "x")
    assert result.out == "Partial success: applied the first 2 out of 3 resources:\n"
    assert store.names("NetworkSet") == ["x/s"]
    none = write(docs(netpol("a", "y"), netpol("b", "z")), "none.yaml")
    result = ctl("apply", "-f", none, "-n", "x")
    assert result.err.startswith("Failed to apply any 'NetworkPolicy' resources: [resource namespace does not match")


def test_replace_success_and_missing_resource(ctl, store, write):
    store.put(pool("p1", "10.1.0.0/16"))
    assert ctl("replace", "-f", write(pool("p1", "10.1.0.0/16"))) == Run(
        0, "Successfully replaced 1 'IPPool' resource(s)\n", ""
    )
    # Calico counts the failed resource as handled, hence its "Partial success" wording.
    assert ctl("replace", "-f", write(pool("nope", "10.5.0.0/16"))) == Run(
        1,
        "Partial success: replaced the first 1 out of 1 'IPPool' resources:\n",
        "Hit error: resource does not exist: IPPool(nope) with error: <nil>\n",
    )
    assert "nope" not in store.names("IPPool")


def test_cluster_information_is_read_only(ctl, store, write):
    path = write((MANIFESTS / "clusterinformation.yaml").read_text().replace("  resourceVersion: \"862\"\n", ""))
    assert ctl("apply", "-f", path).err == (
        "Failed to apply 'ClusterInformation' resource: "
        "[operation apply is not supported on ClusterInformation: resource is readonly]\n"
    )
    assert ctl("create", "-f", path).err == (
        "Failed to create 'ClusterInformation' resource: "
        "[operation create or apply is not supported on ClusterInformation]\n"
    )
    store.put((MANIFESTS / "clusterinformation.yaml").read_text())
    assert ctl("--allow-version-mismatch", "delete", "clusterinfo", "default").err == (
        "Failed to delete 'ClusterInformation' resource: operation delete is not supported on ClusterInformation\n\n"
    )


def test_kubernetes_network_policies_are_refused(ctl, write):
    result = ctl("apply", "-f", write(netpol("knp.default.web", "web")))
    assert result.err == (
        "Failed to apply 'NetworkPolicy' resource: [operation apply or replace is not supported on "
        "NetworkPolicy(web/knp.default.web): kubernetes network policies must be managed through the kubernetes API]\n"
    )


# --- a bad manifest applies nothing -----------------------------------------------------------


def test_a_bad_document_applies_nothing_and_names_document_and_field(ctl, store, write):
    store.put(pool("keep", "10.7.0.0/16"))
    before = dict(store.items)
    second = pool("p2", "10.2.0.0/33").replace("name: p2", "name: p2\n  bogus: 1")  # two problems
    bad = write(docs(pool("p1", "10.1.0.0/16"), second, netpol("a")))
    for verb in ("apply", "create", "replace"):
        result = ctl(verb, "-f", bad)
        assert result.code == 1, verb
        assert result.out == ""
        lines = result.err.splitlines()
        assert lines[0].startswith("Failed to execute command: ")
        assert all(f"{bad} document 2, IPPool \"p2\"" in line for line in lines), lines
        assert any("spec.cidr" in line for line in lines)
        assert any("metadata.bogus" in line for line in lines)
    assert store.items == before
    assert store.writes == 0
    assert ctl.opened == []  # refused before the datastore was contacted


def test_missing_file_and_yaml_syntax_error(ctl, store, write, tmp_path):
    missing = str(tmp_path / "nope.yaml")
    assert ctl("apply", "-f", missing) == Run(
        1, "", f"Failed to execute command: open {missing}: no such file or directory\n"
    )
    broken = write("apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: p1\nspec: [\n")
    result = ctl("create", "-f", broken)
    assert result.code == 1
    assert result.err.startswith(f"Failed to execute command: {broken}: invalid YAML or JSON:")
    assert "line 3, column" in result.err or "line 4, column" in result.err
    assert store.writes == 0


def test_unknown_kind_and_internal_ipam_kinds_in_a_manifest(ctl, store, write):
    result = ctl("apply", "-f", write("apiVersion: projectcalico.org/v3\nkind: IPPoool\nmetadata: {name: x}\n"))
    assert result.code == 1 and "unknown kind 'IPPoool'; did you mean 'IPPool'?" in result.err
    result = ctl("apply", "-f", str(MANIFESTS / "ipam.yaml"))
    assert result.code == 1
    assert "Unknown resource type (IPAMBlock)" in result.err
    assert store.writes == 0


def test_empty_input(ctl, write, tmp_path):
    empty = write("# nothing\n")
    assert ctl("apply", "-f", empty) == Run(1, "", f"No resources specified in file {empty}\n")
    assert ctl("apply", "-f", empty, "--skip-empty") == Run(0, "No resources specified\n", "")
    (tmp_path / "d").mkdir()
    assert ctl("apply", "-f", str(tmp_path / "d")).err == f"No resources specified in directory {tmp_path / 'd'}\n"
    assert ctl("get", "-f", empty).err == f"Failed to get resources: No resources specified in file {empty}\n"


def test_stdin_json_and_lists(ctl, store):
    body = json.dumps(
        {
            "apiVersion": "projectcalico.org/v3",
            "kind": "IPPoolList",
            "items": [
                {"metadata": {"name": "j1"}, "spec": {"cidr": "10.1.0.0/16"}},
                {"metadata": {"name": "j2"}, "spec": {"cidr": "10.2.0.0/16"}},
            ],
        }
    )
    assert ctl("apply", "-f", "-", stdin=body).out == "Successfully applied 2 'IPPool' resource(s)\n"
    assert store.names("IPPool") == ["j1", "j2"]


def test_directory_and_recursive(ctl, store, write, tmp_path):
    write(pool("a", "10.1.0.0/16"), "dir/a.yaml")
    write(netpol("b"), "dir/b.YML")
    write("not a manifest", "dir/notes.txt")
    write(pool("c", "10.3.0.0/16"), "dir/sub/c.json")
    assert ctl("apply", "-f", str(tmp_path / "dir")).out == "Successfully applied 2 resource(s)\n"
    assert store.names("IPPool") == ["a"]
    assert ctl("apply", "-R", "-f", str(tmp_path / "dir")).out == "Successfully applied 3 resource(s)\n"
    assert store.names("IPPool") == ["a", "c"]


# --- delete ------------------------------------------------------------------------------------


def test_delete_by_name_file_and_skip_not_exists(ctl, store, write):
    store.put(docs(pool("p1", "10.1.0.0/16"), pool("p2", "10.2.0.0/16"), pool("p3", "10.3.0.0/16")))
    assert ctl("delete", "ippool", "p1") == Run(0, "Successfully deleted 1 'IPPool' resource(s)\n", "")
    assert ctl("delete", "pools", "p2", "gone") == Run(
        1,
        "Successfully deleted 1 'IPPool' resource(s)\n",
        "Failed to delete 'IPPool' resource: resource does not exist: IPPool(gone) with error: <nil>\n\n",
    )
    assert ctl("delete", "ipp", "gone", "--skip-not-exists").out == "Successfully deleted 1 'IPPool' resource(s)\n"
    assert ctl("delete", "-f", write(pool("p3", "10.3.0.0/16"))).out == "Successfully deleted 1 'IPPool' resource(s)\n"
    assert store.names("IPPool") == []


def test_delete_from_manifest_uses_its_resource_version(ctl, store, write):
    store.put(pool("p1", "10.1.0.0/16"))
    result = ctl("delete", "-f", write(pool("p1", "10.1.0.0/16", resourceVersion="1")))
    assert result.err == "Failed to delete 'IPPool' resource: update conflict: IPPool(p1)\n\n"
    assert store.names("IPPool") == ["p1"]


def test_delete_namespaced(ctl, store):
    store.put(docs(netpol("a", "web"), netpol("a", "default")))
    assert ctl("delete", "networkpolicy", "a", "-n", "web").code == 0
    assert store.names("NetworkPolicy") == ["default/a"]
    assert ctl("delete", "policy", "a").code == 0
    assert ctl("delete", "pol", "a").err == (
        "Failed to delete 'NetworkPolicy' resource: resource does not exist: "
        "NetworkPolicy(default/a) with error: <nil>\n\n"
    )


# --- namespace rules (handleNamespace) -------------------------------------------------------


@pytest.mark.parametrize(
    "written, cli_ns, all_ns, expected",
    [
        ("", "", False, "default"),
        ("", "web", False, "web"),
        ("db", "", False, "db"),
        ("web", "web", False, "web"),
        ("", "", True, ""),
        ("db", "", True, ""),
        ("db", "web", False, "resource namespace does not match client namespace. db != web"),
        ("", "web", True, "cannot use both --namespace and --all-namespaces flags at the same time"),
    ],
)
def test_namespaced_resolution(written, cli_ns, all_ns, expected):
    item = res.Item("NetworkPolicy", "a", written)
    try:
        assert res.resolve_namespace(item, True, cli_ns, all_ns) == expected
    except res.CtlError as exc:
        assert str(exc) == expected


def test_cluster_wide_kinds_refuse_namespaces(ctl, store, write):
    with pytest.raises(res.CtlError, match="namespace should not be specified for a non-namespaced resource"):
        res.resolve_namespace(res.Item("IPPool", "p", "x"), False, "", False)
    path = write(pool("p1", "10.1.0.0/16"))
    result = ctl("apply", "-f", path, "-n", "web")
    assert result.err == "Failed to apply 'IPPool' resource: [IPPool is not namespaced]\n"
    assert ctl("get", "ippool", "-A") == Run(1, "", "IPPool is not namespaced\n")
    assert store.writes == 0
    # A namespace written in a cluster-wide manifest is a manifest problem: nothing applies.
    assert ctl("apply", "-f", write(pool("p1", "10.1.0.0/16", namespace="x"))).err.startswith(
        "Failed to execute command:"
    )


def test_dash_n_fills_in_only_missing_namespaces(ctl, store, write):
    path = write(docs(netpol("a"), netpol("b", "web"), netpol("c", "default")))
    result = ctl("apply", "-f", path, "-n", "web")
    assert result.out == "Partial success: applied the first 2 out of 3 'NetworkPolicy' resources:\n"
    assert result.err == "Hit error(s): [resource namespace does not match client namespace. default != web]\n"
    assert store.names("NetworkPolicy") == ["web/a", "web/b"]


def test_get_single_name_refuses_all_namespaces(ctl, store):
    store.put(netpol("a", "web"))
    assert ctl("get", "np", "a", "-A").err == "cannot use --all-namespace flag for getting a single resource\n"


def test_get_all_namespaces(ctl, store):
    store.put(docs(netpol("a", "web", order=100), netpol("b", "db"), netpol("c")))
    out = ctl("get", "networkpolicies", "-A").out
    assert out.splitlines() == [
        "NAMESPACE   NAME   TIER      ",
        "db          b      default   ",
        "default     c      default   ",
        "web         a      default   ",
        "",
    ]
    assert ctl("get", "np").out.splitlines()[1:] == ["c      default   ", ""]
    assert ctl("get", "np", "-n", "web", "-o", "wide").out.splitlines() == [
        "NAMESPACE   NAME   TIER      ORDER   SELECTOR     ",
        "web         a      default   100     app == 'a'   ",
        "",
    ]
    listed = yaml.safe_load(ctl("get", "np", "-a", "-o", "yaml").out)  # -a: the old spelling of -A
    assert [i["metadata"]["namespace"] for i in listed["items"]] == ["db", "default", "web"]


# --- get: missing, formats --------------------------------------------------------------------


def test_get_missing_resource(ctl, store):
    store.put(pool("p1", "10.1.0.0/16"))
    assert ctl("get", "ippool", "nope") == Run(1, "", "resource does not exist: IPPool(nope) with error: <nil>\n")
    assert ctl("get", "ippool", "nope", "-o", "yaml") == Run(
        1, "null\n", "resource does not exist: IPPool(nope) with error: <nil>\n"
    )
    result = ctl("get", "ippool", "p1", "nope", "-o", "yaml")
    assert yaml.safe_load(result.out)["metadata"]["name"] == "p1"
    assert result.code == 1


def test_yaml_of_one_several_and_all(ctl, store):
    store.put(docs(pool("p1", "10.1.0.0/16"), pool("p2", "10.2.0.0/16")))
    one = ctl("get", "ippool", "p1", "-o", "yaml").out
    assert one.startswith("apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  creationTimestamp: \"2024")
    assert yaml.safe_load(one)["spec"]["cidr"] == "10.1.0.0/16"
    several = yaml.safe_load(ctl("get", "ippool", "p1", "p2", "-o", "yaml").out)
    assert [d["metadata"]["name"] for d in several] == ["p1", "p2"]
    everything = ctl("get", "ippool", "-o", "yaml").out
    listed = yaml.safe_load(everything)
    assert list(listed) == ["apiVersion", "items", "kind", "metadata"]  # sorted, as Calico's YAML
    assert listed["kind"] == "IPPoolList"
    assert listed["metadata"] == {"resourceVersion": str(store.revision)}
    assert [i["metadata"]["name"] for i in listed["items"]] == ["p1", "p2"]
    assert 'resourceVersion: "' in everything  # strings that look like numbers are double-quoted


def test_json_output(ctl, store):
    store.put(pool("p1", "10.1.0.0/16"))
    one = ctl("get", "ippool", "p1", "-o", "json").out
    assert list(json.loads(one))[:3] == ["kind", "apiVersion", "metadata"]
    listed = json.loads(ctl("get", "ippools", "-o", "json").out)
    assert list(listed) == ["kind", "apiVersion", "metadata", "items"]
    assert listed["kind"] == "IPPoolList"
    store.put(netpol("x", "web").replace("app == 'x'", "a == 'x' && b == 'y'"))
    assert "\\u0026\\u0026" in ctl("get", "np", "x", "-n", "web", "-o", "json").out  # as Go escapes &


def test_export_strips_cluster_metadata(ctl, store):
    store.put(netpol("a", "web"))
    exported = yaml.safe_load(ctl("get", "np", "a", "-n", "web", "-o", "yaml", "--export").out)
    assert exported["metadata"] == {"name": "a"}
    listed = yaml.safe_load(ctl("get", "np", "-n", "web", "-o", "yaml", "--export").out)
    assert "uid" in listed["items"][0]["metadata"]  # --export is ignored without names


def test_get_round_trip_through_apply(ctl, store, write):
    store.put((MANIFESTS / "networkpolicy.yaml").read_text())
    dumped = ctl("get", "np", "-A", "-o", "yaml").out
    store.items.clear()
    assert ctl("apply", "-f", write(dumped)).out == "Successfully applied 2 'NetworkPolicy' resource(s)\n"
    assert store.names("NetworkPolicy") == ["production/allow-tcp-6379", "web/web-ingress"]


# --- tables ------------------------------------------------------------------------------------


def table(out: str) -> list[list[str]]:
    return [line.split() for line in out.splitlines() if line]


def test_ippool_table_headings(ctl, store):
    store.put((MANIFESTS / "ippool.yaml").read_text())
    out = ctl("get", "ippool").out
    assert out == (
        "NAME                  CIDR                  SELECTOR     \n"
        "default-ipv6-ippool   fd5f:a4e3:1c2b::/48   !has(edge)   \n"
        "my.ippool-1           10.1.0.0/16           all()        \n"
        "\n"
    )
    wide = table(ctl("get", "ippool", "-o", "wide").out)
    assert wide[0] == ["NAME", "CIDR", "NAT", "IPIPMODE", "VXLANMODE", "DISABLED", "DISABLEBGPEXPORT", "SELECTOR"]
    assert wide[2] == ["my.ippool-1", "10.1.0.0/16", "true", "CrossSubnet", "Never", "false", "false", "all()"]


def test_node_table_headings(ctl, store):
    store.put((MANIFESTS / "node.yaml").read_text())
    store.put(
        "apiVersion: projectcalico.org/v3\nkind: Node\nmetadata: {name: bare}\n"
        "spec: {bgp: {ipv4Address: 10.0.0.9/24}}\n"
    )
    assert table(ctl("get", "nodes").out) == [["NAME"], ["bare"], ["node-hostname"]]
    wide = table(ctl("get", "no", "-o", "wide").out)
    assert wide[0] == ["NAME", "ASN", "IPV4", "IPV6"]
    assert wide[1] == ["bare", "(64512)", "10.0.0.9/24"]  # the cluster default AS, in brackets
    assert wide[2] == ["node-hostname", "64512", "10.244.0.1/24", "2001:db8:85a3::8a2e:370:7334/120"]
    store.put(
        "apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata: {name: default}\nspec: {asNumber: 65001}\n"
    )
    assert table(ctl("get", "nodes", "-o", "wide").out)[1][1] == "(65001)"


def test_networkpolicy_table_headings(ctl, store):
    store.put((MANIFESTS / "networkpolicy.yaml").read_text())
    assert table(ctl("get", "np", "-n", "production").out) == [
        ["NAMESPACE", "NAME", "TIER"],
        ["production", "allow-tcp-6379", "default"],
    ]
    assert table(ctl("get", "np", "-A", "-o", "wide").out) == [
        ["NAMESPACE", "NAME", "TIER", "ORDER", "SELECTOR"],
        ["production", "allow-tcp-6379", "default", "<nil>", "role", "==", "'database'"],
        ["web", "web-ingress", "default", "10.5", "app", "==", "'web'"],
    ]


def test_workloadendpoint_table_headings(ctl, store):
    store.put((MANIFESTS / "workloadendpoint.yaml").read_text())
    assert table(ctl("get", "wep").out) == [
        ["WORKLOAD", "NODE", "NETWORKS", "INTERFACE"],
        ["my-nginx-b1337a", "node1", "192.168.0.0/32", "cali0ef24ba"],
    ]
    wide = table(ctl("get", "weps", "-o", "wide", "-A").out)
    assert wide[0] == ["NAMESPACE", "NAME", "WORKLOAD", "NODE", "NETWORKS", "INTERFACE", "PROFILES", "NATS"]
    assert wide[1][:7] == [
        "default",
        "node1-k8s-my--nginx--b1337a-eth0",
        "my-nginx-b1337a",
        "node1",
        "192.168.0.0/32",
        "cali0ef24ba",
        "profile1",
    ]


def test_other_kind_tables(ctl, store):
    for name in ("bgppeer", "tier", "hostendpoint", "bgpconfiguration", "clusterinformation", "networksets"):
        store.put((MANIFESTS / f"{name}.yaml").read_text())
    ctl = functools.partial(ctl, "--allow-version-mismatch")  # the manifest's cluster runs v3.28.0
    assert table(ctl("get", "bgppeers").out) == [
        ["NAME", "PEERIP", "NODE", "ASN"],
        ["peer-to-rrs", "!has(route-reflector)", "0"],
        ["some.name", "192.168.1.1", "rack1-host1", "63400"],
        ["tor-router", "[2001:db8::1]:1179", "rack", "==", "'rack-1'", "65546"],
    ]
    assert table(ctl("get", "tiers").out) == [["NAME", "ORDER"], ["security", "300"], ["default", "1e+06"]]
    assert table(ctl("get", "hep", "-o", "wide").out)[0] == ["NAME", "NODE", "INTERFACE", "IPS", "PROFILES"]
    assert table(ctl("get", "bgpconfig").out)[0] == ["NAME", "LOGSEVERITY", "MESHENABLED", "ASNUMBER"]
    assert table(ctl("get", "clusterinfo").out) == [
        ["NAME", "CLUSTERGUID", "CLUSTERTYPE", "CALICOVERSION", "DATASTOREREADY"],
        ["default", "2b6c1e0d8f7a4e5c9b3d2a1f0e9d8c7b", "k8s,bgp,kubeadm,kdd", "v3.28.0", "true"],
    ]
    nets = table(ctl("get", "gnetsets", "-o", "wide").out)
    assert nets[1] == ["a-name-for-the-set", "198.51.100.0/28,203.0.113.0/24"]


def test_custom_columns(ctl, store):
    store.put((MANIFESTS / "ippool.yaml").read_text())
    custom = table(ctl("get", "ippool", "-o", "custom-columns=CIDR,NAME").out)
    assert custom[:2] == [["CIDR", "NAME"], ["fd5f:a4e3:1c2b::/48", "default-ipv6-ippool"]]
    result = ctl("get", "ippool", "-o", "custom-columns=NAME,FOO")
    assert result.code == 1
    assert result.err.startswith("Unknown heading FOO, valid values are: CIDR, DISABLEBGPEXPORT, DISABLED,")
    assert ctl("get", "ippool", "-o", "custom-columns=").err == "need to specify at least one column\n"
    assert ctl("get", "ippool", "-o", "xml").err == "unrecognized output format 'xml'\n"


def test_a_table_per_named_resource(ctl, store):
    store.put(docs(pool("p1", "10.1.0.0/16"), pool("p2", "10.2.0.0/16")))
    out = ctl("get", "ippool", "p1", "p2").out
    assert out.count("NAME") == 2 and out.endswith("\n\n")


# --- arguments, datastore and config errors ----------------------------------------------


def test_unknown_kind_command_and_options(ctl):
    assert ctl("get", "ippoolz") == Run(1, "", "Failed to get resources: resource type 'ippoolz' is not supported\n")
    assert ctl("delete", "ippoolz", "x") == Run(1, "", "resource type 'ippoolz' is not supported\n")
    assert ctl("delete", "ippool", "") == Run(1, "", "resource name may not be empty\n")
    result = ctl("frobnicate")
    assert result.code == 1 and result.err.startswith('unknown command: "frobnicate"\n')
    result = ctl("apply", "--bogus", "-f", "x")
    assert result.code == 1
    assert result.err.endswith(
        "Invalid option: 'calicoctl apply --bogus -f x'. Use flag '--help' to read about a specific subcommand.\n"
    )
    assert ctl("apply").code == 1  # -f is required
    assert ctl("apply", "-f", "x", "ippool").code == 1
    assert ctl("-l", "verbose", "get", "ippool").out.startswith("Unknown log level: verbose")


def test_help_texts(ctl):
    top = ctl("--help")
    assert top.code == 0 and top.out.startswith("Usage:\n  calicoctl [options] <command> [<args>...]")
    for command in ("create", "apply", "replace", "delete", "get", "version"):
        result = ctl(command, "--help")
        assert result.code == 0 and result.out.startswith(f"Usage:\n  calicoctl {command}"), command
    assert ctl("--version").out == "Run 'calicoctl version' to see version information.\n"


def test_unreachable_datastore_is_one_line(ctl, store, write):
    store.down = True
    result = ctl("apply", "-f", write(pool("p1", "10.1.0.0/16")))
    assert result == Run(1, "Failed to create Calico API client: etcd at http://127.0.0.1:1: connection refused\n", "")

    def refuse(path, env):
        raise DatastoreUnavailable("etcd at http://10.0.0.1:2379: timed out after 5s")

    result = ctl("get", "ippool", opener=refuse)
    assert result == Run(
        1, "Failed to create Calico API client: etcd at http://10.0.0.1:2379: timed out after 5s\n", ""
    )


def test_config_errors_are_one_line(tmp_path, write):
    from pycalico.core.config import ConfigError

    def bad_config(path, env):
        raise ConfigError("calico.toml", ["datastore.type: no datastore plugin named 'etcdd'", "x: unknown key"])

    run = Run
    ctx = Context(stdout=io.StringIO(), stderr=io.StringIO(), env={}, open_datastore=bad_config)
    assert main(["get", "ippool"], ctx) == 1
    assert run(1, ctx.stdout.getvalue(), "") == run(
        1,
        "Failed to create Calico API client: calico.toml: datastore.type: no datastore plugin named 'etcdd'; "
        "calico.toml: x: unknown key\n",
        "",
    )
    ctx = Context(stdout=io.StringIO(), stderr=io.StringIO(), env={}, open_datastore=bad_config)
    missing = str(tmp_path / "missing.toml")
    assert main(["get", "ippool", "--config", missing], ctx) == 1
    assert ctx.stdout.getvalue() == f"Error reading config file: {missing}\n"


def test_config_and_context_reach_the_datastore_opener(ctl, tmp_path):
    cfg = tmp_path / "calico.toml"
    cfg.write_text("")
    ctl("--context", "prod", "get", "ippool", "-c", str(cfg), env={"A": "1"})
    path, env = ctl.opened[-1]
    assert path == str(cfg) and env["K8S_CURRENT_CONTEXT"] == "prod" and env["A"] == "1"


def test_datastore_failing_mid_command_stops_there(ctl, store, write):
    class Flaky(MemoryStore):
        def create(self, resource):
            if self.writes == 1:
                self.down = True
            return super().create(resource)

    flaky = Flaky()
    path = write(docs(pool("p1", "10.1.0.0/16"), pool("p2", "10.2.0.0/16"), pool("p3", "10.3.0.0/16")))
    result = ctl("apply", "-f", path, opener=lambda p, e: flaky)
    assert result.code == 1
    assert result.err == "Hit error(s): [etcd at http://127.0.0.1:1: connection refused]\n"
    assert flaky.closed


def test_the_datastore_is_closed(ctl, store):
    ctl("get", "ippool")
    assert store.closed


# --- version ---------------------------------------------------------------------------------


def test_version(ctl, store):
    result = ctl("version")
    assert result.code == 1
    lines = result.out.splitlines()
    assert lines[0] == f"Client Version:    {client_version()}"
    assert lines[1].startswith("Git commit:        ")
    assert result.err == (
        "Unable to retrieve Cluster Version or Type: resource does not exist: "
        "ClusterInformation(default) with error: <nil>\n"
    )
    store.put((MANIFESTS / "clusterinformation.yaml").read_text())
    result = ctl("version")
    assert result.code == 0
    assert result.out.splitlines()[2:] == ["Cluster Version:   v3.28.0", "Cluster Type:      k8s,bgp,kubeadm,kdd"]


def test_version_mismatch_check(ctl, store):
    store.put((MANIFESTS / "clusterinformation.yaml").read_text())  # calicoVersion v3.28.0
    result = ctl("get", "ippool")
    assert result == Run(
        1,
        "",
        f"Failed to get resources: Version mismatch.\nClient Version:   {client_version()}\n"
        "Cluster Version:  3.28.0\nUse --allow-version-mismatch to override.\n\n",
    )
    assert ctl("get", "ippool", "--allow-version-mismatch").code == 0
    assert ctl("--allow-version-mismatch", "get", "ippool").code == 0
    info = store.get("ClusterInformation", "default")
    matching = attrs.evolve(info, spec=attrs.evolve(info.spec, calico_version=client_version() + "-dirty"))
    store.items[("ClusterInformation", "", "default")] = matching
    assert ctl("get", "ippool").code == 0


def test_version_poll_duration():
    assert parse_duration("1h30m") == 5400
    assert parse_duration("500ms") == 0.5
    assert parse_duration("0") == 0
    with pytest.raises(ValueError):
        parse_duration("10")


# --- pieces ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, text",
    [(0, "0"), (10.5, "10.5"), (100, "100"), (123456, "123456"), (1e6, "1e+06"), (1234567, "1.234567e+06"),
     (0.0001, "0.0001"), (0.00001, "1e-05"), (-2.5, "-2.5")],
)
def test_go_float(value, text):
    assert go_float(value) == text


def test_join_truncates_as_calico():
    nets = [f"10.0.{i}.0/24" for i in range(10)]
    assert len(join(nets, ",", 80)) == 80 and join(nets, ",", 80).endswith("...")
    assert join({"b": "2", "a": "1"}) == "a=1,b=2"


def test_tabwriter_layout():
    # Columns are max(5, longest cell + 3) wide; every cell is padded, the last one too.
    assert printer.tabulate([["NAME", "X"], ["a-long-name", ""]]) == (
        "NAME" + " " * 10 + "X" + " " * 4 + "\n" + "a-long-name" + " " * 3 + " " * 5 + "\n"
    )


def test_kind_table_agrees_with_the_resource_registry():
    for spec in kinds.KINDS:
        info = kind_info(spec.kind)
        assert info.kind == spec.kind and info.namespaced == spec.namespaced
        assert spec.kind.lower() in spec.names
        assert set(spec.headings) <= set(spec.columns) and set(spec.wide) <= set(spec.columns)
    assert kinds.lookup("IPPools").kind == "IPPool"
    assert kinds.lookup("ipamblock") is None


def test_option_parser():
    from pycalico.core.ctl.cli import Opt

    opts = [Opt("--filename", "-f", value=True), Opt("--recursive", "-R"), Opt("--all-namespaces", "-A")]
    values, rest = parse(opts, ["-Rf", "x.yaml", "--all", "kind", "--", "-n"])
    assert values["filename"] == "x.yaml" and values["recursive"] and values["all-namespaces"]
    assert rest == ["kind", "-n"]
    with pytest.raises(UsageError):
        parse(opts, ["--filename"])


def test_commands_registry_has_room_for_plugins():
    assert set(COMMANDS) == {"create", "replace", "apply", "delete", "get", "version", "ipam", "node"}


def test_apply_sequences_yaml_documents_and_keeps_fields(ctl, store):
    text = (MANIFESTS / "globalnetworkpolicy.yaml").read_text()
    assert ctl("apply", "-f", "-", stdin=text).code == 0
    for resource in load_resources(text):
        stored = store.get("GlobalNetworkPolicy", resource.name)
        assert to_dict(stored)["spec"] == to_dict(resource)["spec"]


def test_numbers_print_as_go_prints_them(ctl, store):
    store.put((MANIFESTS / "tier.yaml").read_text())
    out = ctl("get", "tier", "security", "-o", "yaml").out
    assert "order: 300\n" in out  # a whole float64, as Go's JSON writes it
    assert '"order": 300' in ctl("get", "tier", "security", "-o", "json").out


def test_get_and_delete_by_file(ctl, store, write):
    store.put(docs(pool("p1", "10.1.0.0/16"), netpol("a", "web")))
    # Only the identity of each document matters here: no spec needed.
    path = write(
        "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: p1}\n---\n"
        "apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: a, namespace: web}\n"
    )
    got = yaml.safe_load(ctl("get", "-f", path, "-o", "yaml").out)
    assert [d["kind"] for d in got] == ["IPPool", "NetworkPolicy"]
    assert ctl("delete", "-f", path) == Run(0, "Successfully deleted 2 resource(s)\n", "")
    assert store.items == {}


def test_delete_without_a_name(ctl):
    assert ctl("delete", "ippool") == Run(
        1, "", "Failed to delete 'IPPool' resource: insufficient identifiers, missing 'name'\n\n"
    )
