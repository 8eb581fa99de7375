"""Legacy (unaggregated) discovery documents: /api, /apis, /apis/<group>,
/api/v1 and /apis/<group>/<version>, plus /version. Clients asking for aggregated
discovery (the apidiscovery.k8s.io Accept type) get these too, with a plain
application/json Content-Type, which is how they detect an older server and fall
back."""

from __future__ import annotations

from .resources import ResourceType, TypeTable

VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]

VERSION_INFO = {
    "major": "1",
    "minor": "31",
    "gitVersion": "v1.31.0+pycalico.kubeapi",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2024-08-13T00:00:00Z",
    "goVersion": "go1.22.5",
    "compiler": "gc",
    "platform": "linux/amd64",
}


def api_versions(server_address: str) -> dict:
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    }


def _group(name: str, versions: list[str]) -> dict:
    entries = [{"groupVersion": f"{name}/{v}", "version": v} for v in versions]
    return {"name": name, "versions": entries, "preferredVersion": entries[0]}


def group_list(types: TypeTable) -> dict:
    groups = [_group(g, vs) for g, vs in sorted(types.group_versions().items()) if g]
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def group(types: TypeTable, name: str) -> dict | None:
    versions = types.group_versions().get(name)
    if not name or not versions:
        return None
    return {"kind": "APIGroup", "apiVersion": "v1", **_group(name, versions)}


def _resource(rt: ResourceType) -> list[dict]:
    main = {
        "name": rt.plural,
        "singularName": rt.singular,
        "namespaced": rt.namespaced,
        "kind": rt.kind,
        "verbs": VERBS,
    }
    if rt.short_names:
        main["shortNames"] = list(rt.short_names)
    out = [main]
    if rt.status_subresource:
        status = {"name": f"{rt.plural}/status", "singularName": "", "namespaced": rt.namespaced, "kind": rt.kind}
        out.append({**status, "verbs": ["get", "patch", "update"]})
    return out


def resource_list(types: TypeTable, group_name: str, version: str) -> dict | None:
    served = [rt for rt in types.all() if rt.group == group_name and version in rt.versions]
    if not served:
        return None
    resources = [r for rt in sorted(served, key=lambda rt: rt.plural) for r in _resource(rt)]
    group_version = f"{group_name}/{version}" if group_name else version
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources}
