"""The Kubernetes API stand-in (tests/kubeapi) driven by the official `kubernetes`
client: what the KDD datastore plugin will be judged against has to behave like
a kube-apiserver as seen through that client."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request

import pytest
import urllib3
from kubeapi import DEFAULT_NAMESPACES, KubeAPIServer
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient

TOKEN = "kubeapi-test-token"
MERGE = "application/merge-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
CALICO = "crd.projectcalico.org"


@pytest.fixture
def server(request):
    srv = KubeAPIServer(token=TOKEN, bookmark_interval=0.2, rv_wait=0.3)
    request.addfinalizer(srv.stop)
    return srv.start()


@pytest.fixture
def api_client(server, tmp_path):
    kubeconfig = server.write_kubeconfig(tmp_path / "kubeconfig")
    api = config.new_client_from_config(config_file=str(kubeconfig))
    yield api
    api.close()


@pytest.fixture
def core(api_client):
    return client.CoreV1Api(api_client)


@pytest.fixture
def custom(api_client):
    return client.CustomObjectsApi(api_client)


def failure(code, fn, *args, **kwargs) -> dict:
    """Call ``fn``, expect an ApiException with ``code``, return its Status body."""
    with pytest.raises(ApiException) as info:
        fn(*args, **kwargs)
    assert info.value.status == code, info.value.body
    status = json.loads(info.value.body)
    assert status["kind"] == "Status" and status["status"] == "Failure" and status["code"] == code
    return status


def raw(server, method, path, body=None, content_type="application/json"):
    """One request on the wire: (HTTP code, decoded JSON body)."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(server.url + path, data=data, method=method)
    req.add_header("Authorization", f"Bearer {TOKEN}")
    req.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def node(name, labels=None, **meta):
    return {"metadata": {"name": name, "labels": labels or {}, **meta}}


def pod(name, node_name=None, labels=None, namespace="default"):
    spec = {"containers": [{"name": "main", "image": "busybox:1.36"}]}
    if node_name:
        spec["nodeName"] = node_name
    return {"metadata": {"name": name, "namespace": namespace, "labels": labels or {}}, "spec": spec}


def names(items):
    return sorted(i.metadata.name if hasattr(i, "metadata") else i["metadata"]["name"] for i in items)


def ippool_crd(scope="Cluster", plural="ippools", kind="IPPool", status=False):
    spec_schema = {
        "type": "object",
        "properties": {
            "cidr": {"type": "string"},
            "blockSize": {"type": "integer", "default": 26},
            "disabled": {"type": "boolean"},
            "ipipMode": {"type": "string", "enum": ["Never", "Always", "CrossSubnet"]},
        },
        "required": ["cidr"],
    }
    version = {
        "name": "v1",
        "served": True,
        "storage": True,
        "schema": {"openAPIV3Schema": {"type": "object", "properties": {
            "spec": spec_schema,
            "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
        }}},
    }
    if status:
        version["subresources"] = {"status": {}}
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{CALICO}"},
        "spec": {
            "group": CALICO,
            "scope": scope,
            "names": {"plural": plural, "singular": kind.lower(), "kind": kind, "listKind": kind + "List"},
            "versions": [version],
        },
    }


def ippool(name, cidr="10.0.0.0/16", **spec):
    return {"apiVersion": f"{CALICO}/v1", "kind": "IPPool", "metadata": {"name": name}, "spec": {"cidr": cidr, **spec}}


# ---------------------------------------------------------------------------
# Access: kubeconfig, auth, discovery, lifecycle
# ---------------------------------------------------------------------------


def test_kubeconfig_loads_and_the_bearer_token_is_enforced(server, tmp_path):
    kubeconfig = server.write_kubeconfig(tmp_path / "kubeconfig")
    cfg = client.Configuration()
    config.load_kube_config(config_file=str(kubeconfig), client_configuration=cfg)
    with client.ApiClient(cfg) as api:
        namespaces = client.CoreV1Api(api).list_namespace().items
    assert names(namespaces) == sorted(DEFAULT_NAMESPACES)
    for ns in namespaces:  # what a real apiserver adds to every namespace
        assert ns.metadata.labels["kubernetes.io/metadata.name"] == ns.metadata.name
        assert ns.status.phase == "Active" and ns.spec.finalizers == ["kubernetes"]

    with client.ApiClient(client.Configuration(host=server.url)) as anonymous:
        status = failure(401, client.CoreV1Api(anonymous).list_node)
    assert status["reason"] == "Unauthorized"


def test_discovery_serves_typed_and_dynamic_clients(api_client, tmp_path):
    assert client.VersionApi(api_client).get_code().git_version.startswith("v1.")
    core_resources = {r.name: r for r in client.CoreV1Api(api_client).get_api_resources().resources}
    assert {"namespaces", "nodes", "pods", "pods/status", "serviceaccounts"} <= set(core_resources)
    assert core_resources["pods"].namespaced and not core_resources["nodes"].namespaced
    groups = {g.name for g in client.ApisApi(api_client).get_api_versions().groups}
    assert {"networking.k8s.io", "apiextensions.k8s.io"} <= groups

    dyn = DynamicClient(api_client, cache_file=str(tmp_path / "discovery.json"))
    nodes = dyn.resources.get(api_version="v1", kind="Node")
    nodes.create(body=node("dyn-1"))
    assert [n.metadata.name for n in nodes.get().items] == ["dyn-1"]


def test_stop_closes_the_port_and_joins_its_threads():
    srv = KubeAPIServer().start()
    url = srv.url
    with urllib.request.urlopen(url + "/version") as resp:
        assert json.load(resp)["major"] == "1"
    srv.stop()
    assert not any(t.name == f"kubeapi:{srv.port}" and t.is_alive() for t in threading.enumerate())
    with pytest.raises(OSError):
        urllib.request.urlopen(url + "/version", timeout=1)


# ---------------------------------------------------------------------------
# CRUD conventions
# ---------------------------------------------------------------------------


def test_node_create_get_list_update_delete(core):
    created = core.create_node(node("n1", {"role": "worker"}))
    meta = created.metadata
    assert meta.uid and meta.creation_timestamp and meta.generation == 1
    assert core.read_node("n1").metadata.resource_version == meta.resource_version
    listed = core.list_node()
    assert names(listed.items) == ["n1"] and int(listed.metadata.resource_version) >= int(meta.resource_version)

    current = core.read_node("n1")
    current.metadata.labels["zone"] = "a"
    relabelled = core.replace_node("n1", current)
    assert int(relabelled.metadata.resource_version) > int(meta.resource_version)
    assert relabelled.metadata.generation == 1  # metadata-only change
    relabelled.spec.unschedulable = True
    assert core.replace_node("n1", relabelled).metadata.generation == 2

    deleted = core.delete_node("n1")  # nodes answer with a Status, not the object (the client gives a dict)
    assert deleted["status"] == "Success" and deleted["details"] == {"name": "n1", "kind": "nodes", "uid": meta.uid}
    status = failure(404, core.read_node, "n1")
    assert status["reason"] == "NotFound" and status["message"] == 'nodes "n1" not found'
    assert status["details"] == {"name": "n1", "kind": "nodes"}


def test_one_resource_version_counter_is_shared_by_all_kinds(core, server):
    a = int(core.create_node(node("n1")).metadata.resource_version)
    b = int(core.create_namespace({"metadata": {"name": "calico"}}).metadata.resource_version)
    c = int(core.create_namespaced_service_account("calico", {"metadata": {"name": "sa"}}).metadata.resource_version)
    assert a < b < c and server.resource_version == str(c)
    assert core.list_node().metadata.resource_version == str(c)


def test_pods_live_in_existing_namespaces(core):
    core.create_namespace({"metadata": {"name": "calico"}})
    created = core.create_namespaced_pod("calico", pod("p1", "node-a", namespace="calico"))
    assert created.status.phase == "Pending" and created.spec.service_account_name == "default"
    assert created.spec.restart_policy == "Always"
    core.create_namespaced_pod("default", pod("p2"))
    assert names(core.list_namespaced_pod("calico").items) == ["p1"]
    everywhere = core.list_pod_for_all_namespaces()
    assert [(p.metadata.namespace, p.metadata.name) for p in everywhere.items] == [("calico", "p1"), ("default", "p2")]

    status = failure(404, core.create_namespaced_pod, "missing", pod("p3", namespace="missing"))
    assert status["message"] == 'namespaces "missing" not found' and status["details"]["kind"] == "namespaces"
    status = failure(422, core.create_namespaced_pod, "calico", {"metadata": {"name": "bad"}, "spec": {"containers": []}})
    assert status["reason"] == "Invalid" and status["message"] == 'Pod "bad" is invalid: spec.containers: Required value'
    generated = core.create_namespaced_pod("calico", {"metadata": {"generateName": "web-"}, "spec": pod("x")["spec"]})
    assert generated.metadata.name.startswith("web-") and len(generated.metadata.name) == len("web-") + 5

    deleted = core.delete_namespaced_pod("p1", "calico")  # pods answer with the object
    assert deleted.metadata.name == "p1" and int(deleted.metadata.resource_version) > int(created.metadata.resource_version)
    core.delete_namespace("calico")  # takes its content with it
    assert names(core.list_pod_for_all_namespaces().items) == ["p2"]
    assert failure(403, core.delete_namespace, "default")["message"] == (
        'namespaces "default" is forbidden: this namespace may not be deleted')


def test_already_exists_not_found_and_bad_names(core):
    core.create_node(node("n1"))
    status = failure(409, core.create_node, node("n1"))
    assert status["reason"] == "AlreadyExists" and status["message"] == 'nodes "n1" already exists'
    assert failure(404, core.delete_node, "nope")["reason"] == "NotFound"
    assert failure(404, core.replace_node, "nope", node("nope"))["reason"] == "NotFound"
    status = failure(422, core.create_node, node("Bad_Name"))
    assert status["details"]["causes"][0]["field"] == "metadata.name"
    assert failure(422, core.create_node, node("n2", {"bad/label/key": "x"}))["reason"] == "Invalid"
    status = failure(500, core.create_node, node("n3", resourceVersion="7"))
    assert status["message"] == "resourceVersion should not be set on objects to be created"


def test_update_with_a_stale_resource_version_conflicts(core):
    first = core.create_node(node("n1"))
    fresh = core.read_node("n1")
    fresh.metadata.labels = {"a": "1"}
    core.replace_node("n1", fresh)

    first.metadata.labels = {"a": "2"}
    status = failure(409, core.replace_node, "n1", first)
    assert status["reason"] == "Conflict"
    assert status["message"] == (
        'Operation cannot be fulfilled on nodes "n1": the object has been modified; '
        "please apply your changes to the latest version and try again"
    )
    assert status["details"] == {"name": "n1", "kind": "nodes"}
    first.metadata.resource_version = None  # an empty resourceVersion is an unconditional update
    assert core.replace_node("n1", first).metadata.labels == {"a": "2"}


def test_an_update_that_changes_nothing_writes_nothing(core, server):
    current = core.create_node(node("n1", {"a": "1"}))
    before = server.resource_version
    assert core.replace_node("n1", current).metadata.resource_version == current.metadata.resource_version
    assert core.patch_node("n1", {"metadata": {"labels": {"a": "1"}}}, _content_type=MERGE).metadata.resource_version == before
    assert server.resource_version == before


def test_label_selectors(core):
    core.create_node(node("w1", {"role": "worker", "zone": "a", "tier": "3"}))
    core.create_node(node("w2", {"role": "worker", "zone": "b", "tier": "1"}))
    core.create_node(node("i1", {"role": "infra"}))
    core.create_node(node("bare"))
    cases = {
        "role=worker": ["w1", "w2"],
        "role==worker": ["w1", "w2"],
        "role!=worker": ["bare", "i1"],  # a missing label is "not equal"
        "role in (worker, infra)": ["i1", "w1", "w2"],
        "role notin (worker)": ["bare", "i1"],
        "zone": ["w1", "w2"],
        "!zone": ["bare", "i1"],
        "role=worker,zone=a": ["w1"],
        "role=worker,zone notin (a)": ["w2"],
        "tier>2": ["w1"],
        "": ["bare", "i1", "w1", "w2"],
    }
    for selector, expected in cases.items():
        assert names(core.list_node(label_selector=selector).items) == expected, selector
    assert failure(400, core.list_node, label_selector="role in worker")["reason"] == "BadRequest"
    assert failure(400, core.list_node, label_selector="role=a b")["message"] == "found 'b', expected: ',' or 'end of string'"


def test_field_selectors_on_pods(core):
    core.create_namespace({"metadata": {"name": "calico"}})
    core.create_namespaced_pod("default", pod("a1", "node-a"))
    core.create_namespaced_pod("calico", pod("a2", "node-a", namespace="calico"))
    core.create_namespaced_pod("default", pod("b1", "node-b"))
    core.create_namespaced_pod("default", pod("pending"))
    by_field = lambda sel: names(core.list_pod_for_all_namespaces(field_selector=sel).items)  # noqa: E731
    assert by_field("spec.nodeName=node-a") == ["a1", "a2"]
    assert by_field("spec.nodeName!=node-a") == ["b1", "pending"]
    assert by_field("spec.nodeName=") == ["pending"]
    assert by_field("spec.nodeName=node-a,metadata.namespace=calico") == ["a2"]
    assert by_field("metadata.name=b1") == ["b1"]
    assert names(core.list_namespaced_pod("default", field_selector="spec.nodeName=node-a").items) == ["a1"]
    status = failure(400, core.list_pod_for_all_namespaces, field_selector="spec.foo=x")
    assert status["message"] == "field label not supported: spec.foo"


# ---------------------------------------------------------------------------
# Lists: paging, continue tokens, resourceVersion semantics
# ---------------------------------------------------------------------------


def test_paging_250_objects_with_limit_100(core):
    for i in range(250):
        core.create_namespaced_service_account("default", {"metadata": {"name": f"sa-{i:03d}"}})
    first = core.list_namespaced_service_account("default", limit=100)
    assert len(first.items) == 100 and first.metadata._continue and first.metadata.remaining_item_count == 150
    core.create_namespaced_service_account("default", {"metadata": {"name": "sa-late"}})  # after the snapshot
    second = core.list_namespaced_service_account("default", limit=100, _continue=first.metadata._continue)
    third = core.list_namespaced_service_account("default", limit=100, _continue=second.metadata._continue)
    assert [len(first.items), len(second.items), len(third.items)] == [100, 100, 50]
    assert third.metadata._continue is None
    assert first.metadata.resource_version == second.metadata.resource_version == third.metadata.resource_version
    listed = [sa.metadata.name for page in (first, second, third) for sa in page.items]
    assert listed == [f"sa-{i:03d}" for i in range(250)]  # key order, no duplicates, no late writes


def test_a_continue_token_older_than_compaction_is_gone(core, server):
    for i in range(5):
        core.create_node(node(f"n{i}"))
    page = core.list_node(limit=2)
    core.create_node(node("n9"))
    server.compact()
    status = failure(410, core.list_node, limit=2, _continue=page.metadata._continue)
    assert status["reason"] == "Expired" and status["message"].startswith("The provided continue parameter is too old")
    rest = core.list_node(_continue=status["metadata"]["continue"])  # inconsistent remainder, at the latest revision
    assert names(rest.items) == ["n2", "n3", "n4", "n9"]


def test_list_resource_version_semantics(core, server):
    core.create_node(node("n1"))
    rv1 = server.resource_version
    core.create_node(node("n2"))
    exact = core.list_node(resource_version=rv1, resource_version_match="Exact")
    assert names(exact.items) == ["n1"] and exact.metadata.resource_version == rv1
    assert names(core.list_node(resource_version=rv1, limit=10).items) == ["n1"]  # legacy: RV + limit is exact
    assert names(core.list_node(resource_version=rv1).items) == ["n1", "n2"]  # not older than
    assert names(core.list_node(resource_version="0").items) == ["n1", "n2"]

    status = failure(504, core.list_node, resource_version=str(int(server.resource_version) + 10))
    assert status["reason"] == "Timeout" and status["details"]["causes"][0]["reason"] == "ResourceVersionTooLarge"
    status = failure(422, core.list_node, resource_version_match="Exact")
    assert "resourceVersionMatch is forbidden unless resourceVersion is provided" in status["message"]
    status = failure(400, core.list_node, resource_version=rv1, _continue=core.list_node(limit=1).metadata._continue)
    assert status["message"] == "specifying resource version is not allowed when using continue"

    server.compact()
    status = failure(410, core.list_node, resource_version=rv1, resource_version_match="Exact")
    assert status["reason"] == "Expired" and status["message"] == "The resourceVersion for the provided list is too old."


# ---------------------------------------------------------------------------
# Watches
# ---------------------------------------------------------------------------


def collect(w, stream, count):
    out = []
    for event in stream:
        out.append(event)
        if len(out) == count:
            w.stop()
    return out


def test_watch_from_a_resource_version_sees_exactly_the_later_writes_in_order(core):
    core.create_node(node("before"))
    start = core.list_node().metadata.resource_version
    added = core.create_node(node("n1"))
    core.create_namespace({"metadata": {"name": "other-kind"}})  # moves the revision, not the node stream
    modified = core.patch_node("n1", {"metadata": {"labels": {"x": "y"}}}, _content_type=MERGE)
    deleted_rv = int(modified.metadata.resource_version) + 1
    core.delete_node("n1")

    w = watch.Watch()
    events = collect(w, w.stream(core.list_node, resource_version=start, timeout_seconds=5), 3)
    assert [(ev["type"], ev["object"].metadata.name) for ev in events] == [
        ("ADDED", "n1"), ("MODIFIED", "n1"), ("DELETED", "n1")]
    assert [ev["object"].metadata.resource_version for ev in events] == [
        added.metadata.resource_version, modified.metadata.resource_version, str(deleted_rv)]
    assert events[2]["raw_object"]["metadata"]["labels"] == {"x": "y"}  # the last state
    assert all(ev["raw_object"]["kind"] == "Node" and ev["raw_object"]["apiVersion"] == "v1" for ev in events)


def test_watch_without_a_resource_version_starts_with_the_current_state(core):
    core.create_node(node("n1"))
    core.create_node(node("n2"))
    w = watch.Watch()
    seen = []
    for event in w.stream(core.list_node, timeout_seconds=5):
        seen.append((event["type"], event["object"].metadata.name))
        if len(seen) == 2:
            core.create_node(node("n3"))  # a live change after the synthetic ADDEDs
        if len(seen) == 3:
            w.stop()
    assert seen == [("ADDED", "n1"), ("ADDED", "n2"), ("ADDED", "n3")]


def test_send_initial_events_ends_with_an_annotated_bookmark(core, server):
    core.create_node(node("n1"))
    w = watch.Watch()
    stream = w.stream(core.list_node, send_initial_events=True, resource_version_match="NotOlderThan",
                      allow_watch_bookmarks=True, timeout_seconds=5)
    first, second = collect(w, stream, 2)
    assert first["type"] == "ADDED" and second["type"] == "BOOKMARK"
    meta = second["raw_object"]["metadata"]
    assert meta["annotations"] == {"k8s.io/initial-events-end": "true"} and meta["resourceVersion"] == server.resource_version


def test_bookmarks_arrive_and_carry_the_current_revision(core, server):
    start = core.list_node().metadata.resource_version
    w = watch.Watch()
    bookmarks = []
    for event in w.stream(core.list_node, resource_version=start, allow_watch_bookmarks=True, timeout_seconds=5):
        assert event["type"] == "BOOKMARK"
        bookmarks.append(event["raw_object"])
        if len(bookmarks) == 1:
            core.create_namespace({"metadata": {"name": "bump"}})  # another kind moves the revision
        elif bookmarks[-1]["metadata"]["resourceVersion"] != start:
            w.stop()
    assert bookmarks[0] == {"kind": "Node", "apiVersion": "v1", "metadata": {"resourceVersion": start}}
    assert bookmarks[-1]["metadata"]["resourceVersion"] == server.resource_version
    # Without allowWatchBookmarks none come.
    assert list(watch.Watch().stream(core.list_node, resource_version=start, timeout_seconds=1)) == []


def test_watch_from_a_compacted_resource_version_gets_410(core, server):
    old = core.list_node().metadata.resource_version
    core.create_node(node("n1"))
    server.compact()

    # On the wire: HTTP 200 and one ERROR event holding a 410 Expired Status.
    resp = core.list_node(watch=True, resource_version=old, _preload_content=False)
    lines = [json.loads(line) for line in resp.data.decode().splitlines()]
    assert resp.status == 200 and [ev["type"] for ev in lines] == ["ERROR"]
    assert lines[0]["object"] == {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": f"too old resource version: {old} ({server.resource_version})", "reason": "Expired", "code": 410}

    # The client never yields that ERROR event: Watch.stream resumes once from the
    # same resourceVersion, gets 410 again and raises ApiException(410).
    before = server.requests["watch"]
    with pytest.raises(ApiException) as info:
        list(watch.Watch().stream(core.list_node, resource_version=old))
    assert info.value.status == 410 and info.value.reason.startswith("Expired: too old resource version")
    assert server.requests["watch"] - before == 2
    # With timeout_seconds it does not retry.
    with pytest.raises(ApiException):
        list(watch.Watch().stream(core.list_node, resource_version=old, timeout_seconds=5))
    assert server.requests["watch"] - before == 3
    # From the compaction point on, watching works.
    assert list(watch.Watch().stream(core.list_node, resource_version=server.resource_version, timeout_seconds=1)) == []


def test_selector_transitions_become_added_and_deleted(core):
    start = core.list_node().metadata.resource_version
    core.create_node(node("n1", {"role": "worker"}))
    core.patch_node("n1", {"metadata": {"labels": {"role": "infra"}}}, _content_type=MERGE)
    core.patch_node("n1", {"metadata": {"labels": {"role": "worker"}}}, _content_type=MERGE)
    core.create_node(node("other", {"role": "infra"}))
    core.delete_node("n1")
    w = watch.Watch()
    events = collect(w, w.stream(core.list_node, resource_version=start, label_selector="role=worker",
                                 timeout_seconds=5), 4)
    assert [e["type"] for e in events] == ["ADDED", "DELETED", "ADDED", "DELETED"]
    # Leaving the selection: the previous state, at the revision of the change.
    assert events[1]["object"].metadata.labels == {"role": "worker"}
    assert int(events[1]["object"].metadata.resource_version) > int(events[0]["object"].metadata.resource_version)


def test_watch_on_namespaced_pods_filters_by_node(core):
    start = core.list_pod_for_all_namespaces().metadata.resource_version
    core.create_namespaced_pod("default", pod("a1", "node-a"))
    core.create_namespaced_pod("default", pod("b1", "node-b"))
    core.create_namespaced_pod("kube-system", pod("a2", "node-a", namespace="kube-system"))
    w = watch.Watch()
    events = collect(w, w.stream(core.list_pod_for_all_namespaces, resource_version=start,
                                 field_selector="spec.nodeName=node-a", timeout_seconds=5), 2)
    assert [(e["object"].metadata.namespace, e["object"].metadata.name) for e in events] == [
        ("default", "a1"), ("kube-system", "a2")]


# ---------------------------------------------------------------------------
# Patch, delete, finalizers, status
# ---------------------------------------------------------------------------


def test_patches(core, server):
    created = core.create_node(node("n1", annotations={"a": "1", "b": "2"}))
    merged = core.patch_node("n1", {"metadata": {"annotations": {"b": None, "c": "3"}}}, _content_type=MERGE)
    assert merged.metadata.annotations == {"a": "1", "c": "3"}
    assert int(merged.metadata.resource_version) > int(created.metadata.resource_version)
    assert merged.metadata.generation == 1

    # Without _content_type the client sends a dict as a strategic merge patch and
    # a list as a JSON patch (it rewrites a dict's json-patch type to strategic).
    assert core.patch_node("n1", {"metadata": {"labels": {"x": "y"}}}).metadata.labels == {"x": "y"}
    patched = core.patch_node("n1", [{"op": "replace", "path": "/metadata/labels/x", "value": "v"}])
    assert patched.metadata.labels == {"x": "v"}
    code, body = raw(server, "PATCH", "/api/v1/nodes/n1", {"metadata": {}}, "application/json-patch+json")
    assert (code, body["reason"]) == (400, "BadRequest")
    code, body = raw(server, "PATCH", "/api/v1/nodes/n1", {"metadata": {}}, "application/apply-patch+yaml")
    assert (code, body["reason"]) == (415, "UnsupportedMediaType")
    status = failure(422, core.patch_node, "n1", [{"op": "test", "path": "/metadata/labels/x", "value": "z"}])
    assert status["reason"] == "Invalid"
    stale = {"metadata": {"resourceVersion": created.metadata.resource_version, "labels": {"x": "w"}}}
    assert failure(409, core.patch_node, "n1", stale, _content_type=MERGE)["reason"] == "Conflict"

    two = pod("p1")
    two["spec"]["containers"].append({"name": "side", "image": "busybox:1.36"})
    core.create_namespaced_pod("default", two)
    smp = {"spec": {"containers": [{"name": "side", "image": "busybox:1.37"}]}}
    result = core.patch_namespaced_pod("p1", "default", smp, _content_type=STRATEGIC)
    assert [(c.name, c.image) for c in result.spec.containers] == [("main", "busybox:1.36"), ("side", "busybox:1.37")]


def test_delete_preconditions(core):
    first = core.create_node(node("n1"))
    core.patch_node("n1", {"metadata": {"labels": {"x": "y"}}}, _content_type=MERGE)
    current = core.read_node("n1").metadata.resource_version
    stale = client.V1DeleteOptions(preconditions=client.V1Preconditions(resource_version=first.metadata.resource_version))
    status = failure(409, core.delete_node, "n1", body=stale)
    assert status["reason"] == "Conflict" and status["details"] == {"name": "n1", "kind": "Node"}
    assert status["message"] == (
        f'Operation cannot be fulfilled on Node "n1": the ResourceVersion in the precondition '
        f"({first.metadata.resource_version}) does not match the ResourceVersion in record ({current}). "
        "The object might have been modified"
    )
    wrong_uid = client.V1DeleteOptions(preconditions=client.V1Preconditions(uid="not-the-uid"))
    assert failure(409, core.delete_node, "n1", body=wrong_uid)["reason"] == "Conflict"
    core.read_node("n1")
    good = client.V1DeleteOptions(preconditions=client.V1Preconditions(resource_version=current, uid=first.metadata.uid))
    core.delete_node("n1", body=good)
    failure(404, core.read_node, "n1")


def test_finalizers_hold_a_delete_until_they_are_removed(core):
    core.create_node(node("n1", finalizers=["example.com/hold"]))
    pending = core.delete_node("n1")  # the object comes back, marked, instead of a Status
    assert pending["kind"] == "Node" and pending["metadata"]["deletionTimestamp"] and pending["metadata"]["generation"] == 2
    assert core.read_node("n1").metadata.deletion_timestamp is not None
    more = {"metadata": {"finalizers": ["example.com/hold", "example.com/more"]}}
    assert failure(422, core.patch_node, "n1", more, _content_type=MERGE)["reason"] == "Invalid"
    assert failure(409, core.create_node, node("n1"))["message"].startswith("object is being deleted:")
    core.patch_node("n1", {"metadata": {"finalizers": None}}, _content_type=MERGE)
    failure(404, core.read_node, "n1")


def test_status_subresource_and_pod_spec_immutability(core):
    body = pod("p1", "node-a")
    body["status"] = {"phase": "Running"}
    created = core.create_namespaced_pod("default", body)
    assert created.status.phase == "Pending"  # create cannot set status

    created.status.pod_ip = "10.0.0.5"
    created.status.phase = "Running"
    updated = core.replace_namespaced_pod_status("p1", "default", created)
    assert (updated.status.phase, updated.status.pod_ip) == ("Running", "10.0.0.5")
    assert updated.metadata.generation == 1

    updated.status.phase = "Failed"
    updated.metadata.labels = {"x": "y"}
    again = core.replace_namespaced_pod("p1", "default", updated)
    assert again.status.phase == "Running" and again.metadata.labels == {"x": "y"}  # status ignored on the main resource
    again.spec.node_name = "node-b"
    status = failure(422, core.replace_namespaced_pod, "p1", "default", again)
    assert "pod updates may not change fields" in status["message"]


def test_delete_collection_and_network_policies(api_client, core):
    for name, role in (("a", "x"), ("b", "x"), ("c", "y")):
        core.create_namespaced_service_account("default", {"metadata": {"name": name, "labels": {"role": role}}})
    resp = core.delete_collection_namespaced_service_account("default", label_selector="role=x", _preload_content=False)
    gone = json.loads(resp.data)  # the deleted objects, as a list
    assert gone["kind"] == "ServiceAccountList" and names(gone["items"]) == ["a", "b"]
    assert names(core.list_namespaced_service_account("default").items) == ["c"]

    net = client.NetworkingV1Api(api_client)
    policy = {"metadata": {"name": "deny"}, "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}}
    created = net.create_namespaced_network_policy("default", policy)
    assert created.metadata.generation == 1 and created.spec.policy_types == ["Ingress"]
    assert names(net.list_network_policy_for_all_namespaces().items) == ["deny"]
    failure(404, net.create_namespaced_network_policy, "nowhere", policy)
    assert net.delete_namespaced_network_policy("deny", "default")["status"] == "Success"


# ---------------------------------------------------------------------------
# CRDs and custom objects
# ---------------------------------------------------------------------------


def test_crd_serves_custom_objects_until_deleted(api_client, custom, core):
    ext = client.ApiextensionsV1Api(api_client)
    failure(404, custom.list_cluster_custom_object, CALICO, "v1", "ippools")
    ext.create_custom_resource_definition(ippool_crd())
    conditions = {c.type: c.status for c in ext.read_custom_resource_definition(f"ippools.{CALICO}").status.conditions}
    assert conditions == {"NamesAccepted": "True", "Established": "True"}
    resources = custom.get_api_resources(CALICO, "v1").resources
    assert [(r.name, r.kind, r.namespaced) for r in resources] == [("ippools", "IPPool", False)]

    created = custom.create_cluster_custom_object(CALICO, "v1", "ippools", ippool("pool1", bogus=True))
    assert created["spec"] == {"cidr": "10.0.0.0/16", "blockSize": 26}  # pruned and defaulted
    assert created["metadata"]["generation"] == 1 and created["kind"] == "IPPool"
    status = failure(422, custom.create_cluster_custom_object, CALICO, "v1", "ippools", ippool("pool2", cidr=5))
    assert 'spec.cidr in body must be of type string: "integer"' in status["message"]
    status = failure(422, custom.create_cluster_custom_object, CALICO, "v1", "ippools", ippool("pool3", ipipMode="Sometimes"))
    assert status["details"]["causes"][0]["reason"] == "FieldValueNotSupported"

    # Custom resources never allow an update without resourceVersion.
    unversioned = ippool("pool1", cidr="10.1.0.0/16")
    status = failure(422, custom.replace_cluster_custom_object, CALICO, "v1", "ippools", "pool1", unversioned)
    assert status["message"].endswith("metadata.resourceVersion: Invalid value: 0x0: must be specified for an update")
    stale = dict(unversioned, metadata={"name": "pool1", "resourceVersion": "1"})
    status = failure(409, custom.replace_cluster_custom_object, CALICO, "v1", "ippools", "pool1", stale)
    assert status["message"].startswith(f'Operation cannot be fulfilled on ippools.{CALICO} "pool1"')
    current = dict(unversioned, metadata=created["metadata"])
    replaced = custom.replace_cluster_custom_object(CALICO, "v1", "ippools", "pool1", current)
    assert replaced["spec"]["cidr"] == "10.1.0.0/16" and replaced["metadata"]["generation"] == 2
    patched = custom.patch_cluster_custom_object(CALICO, "v1", "ippools", "pool1", {"spec": {"disabled": True}})
    assert patched["spec"]["disabled"] is True and patched["metadata"]["generation"] == 3
    status = failure(415, custom.patch_cluster_custom_object, CALICO, "v1", "ippools", "pool1",
                     {"spec": {}}, _content_type=STRATEGIC)
    assert status["reason"] == "UnsupportedMediaType"
    listed = custom.list_cluster_custom_object(CALICO, "v1", "ippools")
    assert listed["kind"] == "IPPoolList" and [i["kind"] for i in listed["items"]] == ["IPPool"]

    start = listed["metadata"]["resourceVersion"]
    ext.delete_custom_resource_definition(f"ippools.{CALICO}")
    failure(404, custom.list_cluster_custom_object, CALICO, "v1", "ippools")
    # The instances went first, as the CRD finalizer would delete them.
    events = ext.list_custom_resource_definition(resource_version=start, watch=True, _preload_content=False,
                                                 timeout_seconds=1)
    assert [json.loads(line)["type"] for line in events.data.decode().splitlines()] == ["DELETED"]


def test_namespaced_custom_objects_and_their_watch(api_client, custom):
    client.ApiextensionsV1Api(api_client).create_custom_resource_definition(
        ippool_crd(scope="Namespaced", plural="networksets", kind="NetworkSet"))
    body = {"apiVersion": f"{CALICO}/v1", "kind": "NetworkSet", "metadata": {"name": "ns1"}, "spec": {"cidr": "10.2.0.0/24"}}
    start = custom.list_custom_object_for_all_namespaces(CALICO, "v1", "networksets")["metadata"]["resourceVersion"]
    custom.create_namespaced_custom_object(CALICO, "v1", "default", "networksets", body)
    custom.create_namespaced_custom_object(CALICO, "v1", "kube-system", "networksets", body)
    failure(404, custom.create_namespaced_custom_object, CALICO, "v1", "missing", "networksets", body)
    everywhere = custom.list_custom_object_for_all_namespaces(CALICO, "v1", "networksets")["items"]
    assert [i["metadata"]["namespace"] for i in everywhere] == ["default", "kube-system"]

    w = watch.Watch()
    events = collect(w, w.stream(custom.list_namespaced_custom_object, CALICO, "v1", "default", "networksets",
                                 resource_version=start, timeout_seconds=5), 1)
    assert events[0]["type"] == "ADDED" and events[0]["object"]["metadata"]["namespace"] == "default"
    assert failure(400, custom.create_namespaced_custom_object, CALICO, "v1", "default", "networksets",
                   {"metadata": {"name": "no-kind"}})["reason"] == "BadRequest"


def test_multi_version_crd_serves_one_object_under_each_version(api_client, custom, tmp_path):
    definition = ippool_crd()
    v1 = definition["spec"]["versions"][0]
    definition["spec"]["versions"] = [dict(v1, name="v1beta1", storage=False), v1]
    client.ApiextensionsV1Api(api_client).create_custom_resource_definition(definition)
    group = client.ApisApi(api_client).get_api_versions().groups
    calico = next(g for g in group if g.name == CALICO)
    assert [v.version for v in calico.versions] == ["v1", "v1beta1"] and calico.preferred_version.version == "v1"
    custom.create_cluster_custom_object(CALICO, "v1", "ippools", ippool("pool1"))
    old = custom.get_cluster_custom_object(CALICO, "v1beta1", "ippools", "pool1")
    assert old["apiVersion"] == f"{CALICO}/v1beta1" and old["spec"]["cidr"] == "10.0.0.0/16"

    dyn = DynamicClient(api_client, cache_file=str(tmp_path / "discovery.json"))
    pools = dyn.resources.get(api_version=f"{CALICO}/v1", kind="IPPool")
    assert [p.metadata.name for p in pools.get().items] == ["pool1"]


def test_custom_object_status_subresource(api_client, custom):
    client.ApiextensionsV1Api(api_client).create_custom_resource_definition(ippool_crd(status=True))
    body = ippool("pool1")
    body["status"] = {"allocated": 3}
    created = custom.create_cluster_custom_object(CALICO, "v1", "ippools", body)
    assert "status" not in created  # create cannot set status
    created["status"] = {"allocated": 4}
    created["spec"]["cidr"] = "10.9.0.0/16"  # ignored by /status
    with_status = custom.replace_cluster_custom_object_status(CALICO, "v1", "ippools", "pool1", created)
    assert with_status["status"] == {"allocated": 4} and with_status["spec"]["cidr"] == "10.0.0.0/16"
    assert with_status["metadata"]["generation"] == 1
    patched = custom.patch_cluster_custom_object(CALICO, "v1", "ippools", "pool1", {"status": {"allocated": 9}})
    assert patched["status"] == {"allocated": 4}


# ---------------------------------------------------------------------------
# Test controls: outage, counters
# ---------------------------------------------------------------------------


def test_outage_cuts_watches_and_refuses_requests_until_recovery(core, server):
    ended = threading.Event()
    errors = []

    def watcher():
        try:
            for _ in watch.Watch().stream(core.list_node, resource_version=server.resource_version, timeout_seconds=10):
                pass
        except Exception as exc:  # noqa: BLE001 - the cut shows up as a transport error
            errors.append(exc)
        ended.set()

    thread = threading.Thread(target=watcher, daemon=True)
    thread.start()
    assert server.wait_until(lambda: server.watches_open == 1)
    server.fail(True)
    assert ended.wait(5) and errors, "the open watch must be cut"
    assert server.wait_until(lambda: server.watches_open == 0)
    assert failure(503, core.list_node)["reason"] == "ServiceUnavailable"

    server.fail(True, mode="close")
    with pytest.raises((urllib3.exceptions.HTTPError, ConnectionError)):
        core.list_node(_request_timeout=2)
    server.fail(False)
    assert core.list_node().items == []
    thread.join(5)


def test_request_counters(core, server):
    core.create_node(node("n1"))
    core.list_node()
    core.read_node("n1")
    w = watch.Watch()
    opened = threading.Thread(target=lambda: list(w.stream(core.list_node, timeout_seconds=1)), daemon=True)
    t0 = time.monotonic()
    opened.start()
    assert server.wait_until(lambda: server.watches_open == 1)
    opened.join(5)
    assert server.wait_until(lambda: server.watches_open == 0) and time.monotonic() - t0 < 3
    counts = server.requests
    assert (counts["create", "nodes"], counts["list", "nodes"], counts["get", "nodes"], counts["watch", "nodes"]) == (1, 1, 1, 1)
