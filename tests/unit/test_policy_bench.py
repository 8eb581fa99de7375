"""pycalico.core.policy: compile time at scale (1,000 policies x 1,000 endpoints).

No timing asserts: the figures are printed (``pytest -s``) and recorded in the report.
Every policy has its own rule selectors, so the model holds over a thousand distinct sets.
"""

import time

from pycalico.core.calc import DesiredState
from pycalico.core.policy import compile, verdict
from pycalico.core.resources.codec import load_resource

NAMESPACES = 10
APPS = 50
ALL = "all()"


def _meta(name, namespace=None, labels=None):
    meta = {"name": name}
    if namespace is not None:
        meta["namespace"] = namespace
    if labels:
        meta["labels"] = labels
    return meta


def big_state(policies=1000, endpoints=1000, nodes=1):
    res = []
    for n in range(NAMESPACES):
        ns = f"ns-{n}"
        allow = [{"action": "Allow"}]
        res.append(
            {
                "apiVersion": "projectcalico.org/v3",
                "kind": "Profile",
                "metadata": _meta(f"kns.{ns}"),
                "spec": {"labelsToApply": {"pcns.name": ns}, "ingress": allow, "egress": allow},
            }
        )
    for i in range(endpoints):
        ns = f"ns-{i % NAMESPACES}"
        node = f"node{i % nodes + 1}"
        res.append(
            {
                "apiVersion": "projectcalico.org/v3",
                "kind": "WorkloadEndpoint",
                "metadata": _meta(f"{node}-k8s-pod--{i}-eth0", ns, {"app": f"app-{i % APPS}", "pod": f"pod-{i}"}),
                "spec": {
                    "node": node,
                    "orchestrator": "k8s",
                    "pod": f"pod-{i}",
                    "endpoint": "eth0",
                    "interfaceName": f"cali{i:011d}",
                    "ipNetworks": [f"10.{i // 65536}.{i // 256 % 256}.{i % 256}/32"],
                    "profiles": [f"kns.{ns}"],
                    "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
                },
            }
        )
    for p in range(policies):
        ns = f"ns-{p % NAMESPACES}"
        ingress = [
            {
                "action": "Allow",
                "protocol": "TCP",
                "source": {"selector": f"app == 'app-{(p + 1) % APPS}' && pod != 'pod-{p}'", "namespaceSelector": ALL},
                "destination": {"ports": [80, "http"]},
            },
            {"action": "Deny", "source": {"namespaceSelector": f"name == 'ns-{(p + 3) % NAMESPACES}'"}},
        ]
        peer = {"selector": f"app == 'app-{(p - 1) % APPS}'", "namespaceSelector": ALL}
        nets = {"nets": [f"192.0.{p % 256}.0/24"], "notNets": [f"192.0.{p % 256}.128/25"]}
        egress = [
            {"action": "Allow", "destination": peer},
            {"action": "Allow", "destination": nets},
        ]
        res.append(
            {
                "apiVersion": "projectcalico.org/v3",
                "kind": "NetworkPolicy",
                "metadata": _meta(f"pol-{p}", ns),
                "spec": {"order": p % 7, "selector": f"app == 'app-{p % APPS}'", "ingress": ingress, "egress": egress},
            }
        )
    kinds = {}
    for doc in res:
        r = load_resource(doc)
        kinds.setdefault(type(r).KIND, []).append(r)
    return DesiredState(node_name="node1", revision=1, resources={k: tuple(v) for k, v in kinds.items()})


def test_compile_1000_policies_by_1000_endpoints(capsys):
    state = big_state()
    start = time.perf_counter()
    model = compile(state)
    node_seconds = time.perf_counter() - start
    start = time.perf_counter()
    cluster = compile(state, scope="cluster")
    cluster_seconds = time.perf_counter() - start
    assert len(model.endpoints) == 1000 and len(model.policies) == 1000
    assert len(model.ip_sets) > 1000
    first = next(iter(model.endpoints.values()))
    assert first.ingress.policy_keys  # every endpoint is selected by some policy
    start = time.perf_counter()
    eps = list(cluster.all_endpoints.values())
    by_pod = {ep.pod: ep for ep in eps}
    # pod-i (app i) may send to pod-(i-1) (app i-1), which accepts from app i: all allowed.
    pairs = [(by_pod[f"pod-{i}"], by_pod[f"pod-{(i - 1) % 1000}"]) for i in range(1000)]
    judged = sum(verdict(cluster, src, dst, "TCP", 80).allowed for src, dst in pairs)
    assert judged == 1000
    judge_seconds = time.perf_counter() - start
    with capsys.disabled():
        print(
            f"\ncompile 1000 policies x 1000 endpoints: node scope {node_seconds:.2f} s, "
            f"cluster scope {cluster_seconds:.2f} s; {len(model.ip_sets)} sets; "
            f"1000 verdicts {judge_seconds:.2f} s ({judged} allowed)"
        )
