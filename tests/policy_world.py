"""Policy resources for tests: documents, YAML states, and a world that changes one
resource at a time, as the agent's cache does.

The world is shared by the tests of the policy compiler and of both dataplanes'
incremental rendering: a random walk of changes of every kind the compiler tracks (policies' rules, selectors,
order and tiers, endpoints' labels, nodes and addresses, profiles' labels and rules,
network sets, tiers, pools, Felix settings). The changed resource is a new object, the
others stay the same objects; ``resync`` makes every object new (and equal).
"""

import copy
import random

from pycalico.core.calc import DesiredState
from pycalico.core.resources.codec import load_resource, load_resources

NAMESPACES = ("web", "db")
APPS = ("api", "db", "cache", "batch")
TIERS = ("default", "security", "platform")


def doc(kind, name, spec, namespace=None, labels=None):
    """A v3 resource document."""
    meta = {"name": name}
    if namespace:
        meta["namespace"] = namespace
    if labels:
        meta["labels"] = labels
    return {"apiVersion": "projectcalico.org/v3", "kind": kind, "metadata": meta, "spec": spec}


def yaml_state(text: str, node: str = "node1") -> DesiredState:
    """The desired state of ``node`` made of the YAML documents in ``text``."""
    kinds: dict = {}
    for res in load_resources(text):
        kinds.setdefault(type(res).KIND, []).append(res)
    return DesiredState(node_name=node, revision=1, resources={k: tuple(v) for k, v in kinds.items()})


def policy_yaml(
    name, selector, *, kind="GlobalNetworkPolicy", order=None, tier=None, types=None, ingress="", egress="", extra=""
) -> str:
    """A policy manifest (a GlobalNetworkPolicy, or a NetworkPolicy of namespace web), with ``---``."""
    namespace = ", namespace: web" if kind == "NetworkPolicy" else ""
    lines = ["apiVersion: projectcalico.org/v3", f"kind: {kind}", f"metadata: {{name: {name}{namespace}}}", "spec:"]
    lines.append(f"  selector: {selector}")
    for key, value in (("order", order), ("tier", tier), ("types", types), ("ingress", ingress), ("egress", egress)):
        if value is not None and value != "":
            lines.append(f"  {key}: {value}")
    if extra:
        lines.append(extra)
    return "\n".join(lines) + "\n---\n"


def _key(document):
    meta = document["metadata"]
    return document["kind"], meta.get("namespace", ""), meta["name"]


class World:
    """Resource documents and their loaded objects; a change reloads only its document."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.docs: dict = {}
        self.objects: dict = {}
        self.revision = 0
        for ns in NAMESPACES:
            self.put(doc("Profile", f"kns.{ns}", {"labelsToApply": {"pcns.name": ns}, "ingress": [{"action": "Allow"}],
                                                   "egress": [{"action": "Allow"}]}))
        self.put(doc("IPPool", "pods", {"cidr": "10.65.0.0/16", "natOutgoing": True}))
        self.put(doc("Tier", "security", {"order": 100}))
        for i in range(12):
            self.put(self.endpoint(i))
        for i in range(3):
            self.put(self.host_endpoint(i))
        for i in range(3):
            self.put(self.network_set(i))
        for i in range(14):
            self.put(self.policy(i))

    def put(self, document):
        key = _key(document)
        self.docs[key] = document
        self.objects[key] = load_resource(copy.deepcopy(document))

    def drop(self, key):
        self.docs.pop(key, None)
        self.objects.pop(key, None)

    def state(self, node="node1") -> DesiredState:
        self.revision += 1
        kinds: dict = {}
        for key in sorted(self.objects):
            kinds.setdefault(key[0], []).append(self.objects[key])
        return DesiredState(node_name=node, revision=self.revision, resources={k: tuple(v) for k, v in kinds.items()})

    # --- documents ---

    def endpoint(self, i):
        r = self.rng
        ns = r.choice(NAMESPACES)
        spec = {"node": r.choice(["node1", "node1", "node2"]), "orchestrator": "k8s", "pod": f"pod-{i}",
                "endpoint": "eth0", "interfaceName": f"cali{i:04d}", "profiles": [f"kns.{ns}"],
                "ports": [{"name": "http", "port": r.choice([80, 8080]), "protocol": "TCP"}]}
        if r.random() > 0.1:
            spec["ipNetworks"] = [f"10.65.0.{i + 1}/32"] + (["fd00::%x/128" % (i + 1)] if r.random() > 0.5 else [])
        if r.random() > 0.5:
            spec["allowSpoofedSourcePrefixes"] = ["10.99.0.0/24"]
        return doc("WorkloadEndpoint", f"node-k8s-pod--{i}-eth0", spec, ns, {"app": r.choice(APPS), "pod": f"pod-{i}"})

    def host_endpoint(self, i):
        r = self.rng
        spec = {"node": r.choice(["node1", "node2"]), "interfaceName": r.choice(["eth0", "eth1", "*"]),
                "expectedIPs": [f"198.51.100.{10 + i}"], "profiles": [r.choice(["kns.web", "projectcalico-default-allow"])]}
        return doc("HostEndpoint", f"host-{i}", spec, labels={"app": r.choice(APPS), "host": "true"})

    def network_set(self, i):
        r = self.rng
        nets = r.sample(["203.0.113.0/24", "192.0.2.0/25", "10.65.0.3/32", "0.0.0.0/0"], r.randint(1, 2))
        if i % 2:
            return doc("GlobalNetworkSet", f"gns-{i}", {"nets": nets}, labels={"app": r.choice(APPS)})
        return doc("NetworkSet", f"ns-{i}", {"nets": nets}, r.choice(NAMESPACES), {"app": r.choice(APPS)})

    def policy(self, i):
        r = self.rng
        ingress = [
            {"action": r.choice(["Allow", "Deny", "Pass"]), "protocol": "TCP",
             "source": {"selector": f"app == '{r.choice(APPS)}'", "namespaceSelector": r.choice(["all()", "name == 'web'"])},
             "destination": {"ports": [r.choice([80, 443, 8080]), "http"]}},
        ]
        egress = [{"action": "Allow", "destination": {"nets": [r.choice(["192.0.2.0/24", "203.0.113.0/24"])]}}]
        spec = {"selector": r.choice([f"app == '{a}'" for a in APPS] + ["all()", "has(host)"]),
                "order": r.choice([None, 10, 100, 1000]), "ingress": ingress}
        if r.random() > 0.4:
            spec["egress"] = egress
        tier = r.choice(TIERS)
        name = f"{tier}.pol-{i}" if tier != "default" else f"pol-{i}"
        if tier != "default":
            spec["tier"] = tier
        if i % 3:
            return doc("NetworkPolicy", name, spec, r.choice(NAMESPACES))
        if r.random() > 0.7:
            spec["doNotTrack"] = True
            spec["applyOnForward"] = True
        return doc("GlobalNetworkPolicy", name, spec)

    # --- changes ---

    def pick(self, kind):
        keys = [k for k in self.docs if k[0] == kind]
        return self.rng.choice(keys) if keys else None

    def change(self) -> str:
        r = self.rng
        what = r.choice([
            "policy rules", "policy selector", "policy order", "policy tier", "policy new", "policy gone",
            "endpoint labels", "endpoint node", "endpoint address", "endpoint new", "endpoint gone", "host endpoint",
            "profile labels", "profile rules", "profile gone", "network set", "tier", "pool", "felix", "resync",
        ])
        if what.startswith("policy"):
            kinds = ["NetworkPolicy", "GlobalNetworkPolicy"]
            key = self.pick(r.choice(kinds)) or self.pick(kinds[0])
            if what == "policy new" or key is None:
                self.put(self.policy(r.randint(100, 10000)))
                return what
            if what == "policy gone":
                self.drop(key)
                return what
            edited = copy.deepcopy(self.docs[key])
            if what == "policy rules":
                edited["spec"]["ingress"][0]["destination"]["ports"][0] = r.randint(1, 65535)
            elif what == "policy selector":
                edited["spec"]["selector"] = f"app == '{r.choice(APPS)}'"
            elif what == "policy tier":
                edited["spec"]["tier"] = r.choice(TIERS)
            else:
                edited["spec"]["order"] = r.choice([None, 5, 50, 500])
            self.put(edited)
        elif what.startswith("endpoint"):
            key = self.pick("WorkloadEndpoint")
            if what == "endpoint new" or key is None:
                self.put(self.endpoint(r.randint(20, 200)))
                return what
            if what == "endpoint gone":
                self.drop(key)
                return what
            edited = copy.deepcopy(self.docs[key])
            if what == "endpoint labels":
                edited["metadata"]["labels"]["app"] = r.choice(APPS)
            elif what == "endpoint address":
                edited["spec"]["ipNetworks"] = [f"10.65.{r.randint(1, 9)}.{r.randint(1, 250)}/32"]
            else:
                edited["spec"]["node"] = "node2" if edited["spec"]["node"] == "node1" else "node1"
            self.put(edited)
        elif what == "host endpoint":
            self.put(self.host_endpoint(r.randint(0, 4)))
        elif what.startswith("profile"):
            key = ("Profile", "", f"kns.{r.choice(NAMESPACES)}")
            if what == "profile gone":
                if key in self.docs:
                    self.drop(key)
                else:
                    ns = key[2][4:]
                    self.put(doc("Profile", key[2], {"labelsToApply": {"pcns.name": ns}}))
                return what
            edited = copy.deepcopy(self.docs.get(key) or doc("Profile", key[2], {}))
            if what == "profile labels":
                edited["spec"]["labelsToApply"] = {"pcns.name": r.choice(NAMESPACES), "app": r.choice(APPS)}
            else:
                edited["spec"]["ingress"] = [{"action": r.choice(["Allow", "Deny"]),
                                           "source": {"selector": f"app == '{r.choice(APPS)}'"}}]
            self.put(edited)
        elif what == "network set":
            key = self.pick(r.choice(["NetworkSet", "GlobalNetworkSet"]))
            if key is not None and r.random() < 0.3:
                self.drop(key)
            elif key is not None and r.random() < 0.5:
                edited = copy.deepcopy(self.docs[key])
                edited["spec"]["nets"] = [f"192.0.2.{r.randint(0, 255)}/32"]
                self.put(edited)
            else:
                self.put(self.network_set(r.randint(0, 5)))
        elif what == "tier":
            self.put(doc("Tier", r.choice(["security", "platform"]), {"order": r.choice([50, 100, 5000])}))
        elif what == "pool":
            self.put(doc("IPPool", r.choice(["pods", "more"]), {"cidr": r.choice(["10.65.0.0/16", "10.66.0.0/16"]),
                                                                "natOutgoing": r.random() > 0.5}))
        elif what == "felix":
            self.put(doc("FelixConfiguration", "default", {"workloadSourceSpoofing": r.choice(["Any", "Disabled"])}))
        else:  # a fresh snapshot: every object new, equal to the old
            self.objects = {k: load_resource(copy.deepcopy(d)) for k, d in self.docs.items()}
        return what


def walk(seed: int, steps: int = 100):
    """``(step, what changed, state)`` along a random walk (step 0: the start)."""
    world = World(random.Random(seed))
    for step in range(steps):
        what = world.change() if step else "start"
        yield step, what, world.state()
