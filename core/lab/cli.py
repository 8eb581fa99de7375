"""calico-lab: a thin command line over pycalico.core.lab.Lab."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from . import netns
from .cluster import POLICIES, ROUTINGS, Lab, LabNotFound, lab_dir, remove_stale_dir
from .typha import MAX_REPLICAS
from .state import LabError, default_state_root

PROG = "calico-lab"


class _Parser(argparse.ArgumentParser):
    # Usage mistakes are one line and exit 1, like every other error here.
    def error(self, message: str):  # type: ignore[override]
        raise LabError(f"{message} (see `{self.prog} --help`)")


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--name", default="lab", help="lab name (default: lab)")
    common.add_argument("--state-dir", metavar="DIR", default=None,
                        help="root holding lab state (default: $PYCALICO_LAB_DIR "
                             "or /run/pycalico-lab); the lab lives in DIR/NAME")

    p = _Parser(prog=PROG, description="A Calico cluster in network namespaces on one machine.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    up = sub.add_parser("up", parents=[common], help="create a lab")
    up.add_argument("--nodes", type=int, default=2, help="number of nodes (default 2)")
    up.add_argument("--subnets", type=int, choices=(1, 2), default=1,
                    help="1: all nodes on 198.51.100.0/24; 2: half on 203.0.113.0/24, "
                         "routed by the underlay")
    up.add_argument("--recreate", action="store_true",
                    help="tear down an existing lab of this name first")
    up.add_argument("--routing", choices=ROUTINGS, default=None,
                    help="run calico-node on every node with this routing plugin "
                         "(the default pool encapsulates to match)")
    up.add_argument("--route-reflectors", type=int, default=0, metavar="N",
                    help="with --routing bird: the first N nodes reflect routes to the others "
                         "and the node-to-node mesh is off")
    up.add_argument("--policy", choices=POLICIES, default=None,
                    help="run calico-node on every node with this policy plugin (default iptables "
                         "when --routing is given)")
    up.add_argument("--typha", type=int, default=0, metavar="N",
                    help=f"run N calico-typha replicas (0..{MAX_REPLICAS}) in the control-plane namespace; "
                         "every node's agent reads through them instead of watching etcd")
    up.add_argument("--bare", action="store_true",
                    help="bare nodes: each a machine of its own (its own /etc, /opt, /var, /usr/local, "
                         "/root, /run and host name) with nothing of pycalico, for Ansible to "
                         "provision (see `inventory`)")

    inv = sub.add_parser("inventory", parents=[common],
                         help="print an Ansible inventory of a lab's bare nodes (connection calico_lab)")
    inv.add_argument("--json", action="store_true", help="JSON instead of YAML")

    st = sub.add_parser("status", parents=[common], help="show a lab")
    st.add_argument("--json", action="store_true", help="machine-readable output")

    ex = sub.add_parser("exec", parents=[common],
                        usage=f"{PROG} exec NODE|NAMESPACE/POD [--name NAME] -- CMD...",
                        help="run a command inside a node's (or a pod's) network namespace")
    ex.add_argument("node", metavar="NODE|NAMESPACE/POD")
    ex.add_argument("cmd", nargs="*", help=argparse.SUPPRESS)

    pod = sub.add_parser("pod", help="pods wired by the calico CNI plugin")
    pod_sub = pod.add_subparsers(dest="pod_command", required=True, parser_class=_Parser)
    pa = pod_sub.add_parser("add", parents=[common], help="create a pod on a node; prints its IP")
    pa.add_argument("node")
    pa.add_argument("pod", metavar="NAMESPACE/NAME")
    pa.add_argument("--labels", default="", metavar="K=V,...", help="the pod's labels")
    pa.add_argument("--ports", default="", metavar="NAME=PORT[/PROTO],...",
                    help="the pod's named container ports (protocol TCP, UDP or SCTP; default TCP)")
    pd = pod_sub.add_parser("del", parents=[common], help="delete a pod (CNI DEL, then its namespace)")
    pd.add_argument("pod", metavar="NAMESPACE/NAME")
    pl = pod_sub.add_parser("list", parents=[common], help="list the lab's pods")
    pl.add_argument("--json", action="store_true")

    for verb, what in (("apply", "create or update"), ("delete", "delete")):
        kp = sub.add_parser(verb, parents=[common],
                            help=f"{what} the Calico resources and Kubernetes Namespaces, ServiceAccounts "
                                 "and NetworkPolicies of a manifest, as Kubernetes and kube-controllers would")
        kp.add_argument("-f", "--filename", required=True, metavar="FILE", help="YAML or JSON; - reads stdin")
    lb = sub.add_parser("label", parents=[common], help="change a namespace's or a pod's labels (kubectl label)")
    lb.add_argument("target", metavar="ns/NAME|pod/NAMESPACE/NAME")
    lb.add_argument("changes", nargs="+", metavar="KEY=VALUE|KEY-")

    sub.add_parser("down", parents=[common], help="remove a lab (idempotent)")

    demo = sub.add_parser("demo", help="a lab with BGP, pods in two namespaces and a policy: show it, "
                                       "check it with pings, tear it down")
    demo.add_argument("--name", default="demo", help="lab name (default: demo); a lab of that name is replaced")
    demo.add_argument("--state-dir", metavar="DIR", default=None, help="root holding lab state, as for `up`")
    demo.add_argument("--keep", action="store_true", help="leave the lab up to explore")
    demo.add_argument("--nodes", type=int, default=3, help="number of nodes (default 3)")
    demo.add_argument("--policy", choices=POLICIES, default="iptables",
                      help="the agents' policy plugin (default iptables)")

    ls = sub.add_parser("list", help="list labs")
    ls.add_argument("--state-dir", metavar="DIR", default=None)
    ls.add_argument("--json", action="store_true")
    return p


def _need_root() -> None:
    if os.geteuid() != 0:
        raise LabError("must run as root (network namespaces need CAP_NET_ADMIN)")


def _cmd_up(a) -> int:
    _need_root()
    ok, why = netns.available()
    if not ok:
        raise LabError(why)
    if a.route_reflectors and a.routing != "bird":
        raise LabError("--route-reflectors needs --routing bird")
    lab = Lab.up(a.name, nodes=a.nodes, subnets=a.subnets, state_root=a.state_dir,
                 recreate=a.recreate, routing=a.routing, policy=a.policy, typha=a.typha,
                 bare=a.bare)
    if a.route_reflectors:
        from . import bgp

        try:
            reflectors = bgp.setup_route_reflectors(lab, a.route_reflectors)
        except BaseException:
            lab.down()
            raise
        print(f"route reflectors: {', '.join(reflectors)} (cluster ID {bgp.RR_CLUSTER_ID}); "
              "node-to-node mesh off")
    print(f"lab {lab.name!r} is up: {len(lab.nodes)} nodes, etcd at "
          f"{', '.join(lab.etcd_endpoints)}, state in {lab.state_dir}")
    for n in lab.nodes:
        print(f"  {n.name:<8} {n.cidr:<18} netns {n.netns}")
    if lab.state.typhas:
        print(f"calico-typha: {', '.join(t.address for t in lab.state.typhas)} "
              f"(netns {lab.cp_netns}); every node's [typha] addresses lists them")
    if lab.state.agents:
        print(f"calico-node runs on every node: routing {lab.state.routing}, policy {lab.state.policy}")
    if lab.state.bare:
        print(f"bare nodes, ready to provision: {PROG} inventory --name {lab.name} > inventory.yml")
    return 0


def _cmd_inventory(a) -> int:
    from .inventory import inventory

    data = inventory(Lab.load(a.name, a.state_dir))
    if a.json:
        print(json.dumps(data, indent=2))
    else:
        import yaml

        print(yaml.safe_dump(data, sort_keys=False), end="")
    return 0


def _cmd_status(a) -> int:
    _need_root()
    lab = Lab.load(a.name, a.state_dir)
    s = lab.status()
    if lab.state.routing == "bird":
        from . import bgp

        s["bgp"] = bgp.status(lab)
    if a.json:
        print(json.dumps(s, indent=2))
        return 0
    print(f"lab {s['name']} ({s['state_dir']}){'' if s['complete'] else '  [INCOMPLETE]'}")
    health = "healthy" if s["etcd"]["healthy"] else "NOT healthy"
    print(f"etcd: {', '.join(s['etcd']['endpoints'])} {health} (netns {s['cp_netns']})")
    print("nodes:")
    for n in s["nodes"]:
        missing = "" if n["netns_exists"] else "  [netns missing]"
        print(f"  {n['name']:<8} netns {n['netns']:<20} {n['cidr']:<18} "
              f"{n['config_path']}{missing}")
    if s["typha"]:
        print("typha:")
    for t in s["typha"]:
        state = "not running" if t["pid"] is None else f"pid {t['pid']:<8} " + (
            f"ready, {'?' if t['connections'] is None else t['connections']} agent(s)" if t["not_ready"] is None
            else f"NOT ready: {t['not_ready']}")
        print(f"  {t['name']:<15} {t['address']:<19} {state}  (health localhost:{t['health_port']}, "
              f"metrics :{t['metrics_port']})")
    print("processes:")
    for p in s["processes"]:
        print(f"  {p['name']:<12} pid {p['pid']:<8} {'alive' if p['alive'] else 'DEAD'}"
              f"  netns {p['netns']}  log {p['log_path']}")
    if "bgp" in s:
        from . import bgp

        print("\n".join(bgp.format_status(s["bgp"])))
    return 0


def _cmd_exec(a) -> int:
    _need_root()
    if not a.cmd:
        raise LabError(f"no command given: {PROG} exec NODE -- CMD...")
    lab = Lab.load(a.name, a.state_dir)
    try:
        if "/" in a.node:
            from . import pods

            rc = pods.exec_in_pod(lab, a.node, a.cmd).returncode
        else:
            rc = lab.exec(a.node, a.cmd).returncode
    except FileNotFoundError as e:
        raise LabError(f"cannot run {a.cmd[0]}: {e.strerror}") from None
    # Killed by a signal: report it the way a shell would.
    return 128 - rc if rc < 0 else rc


def _cmd_down(a) -> int:
    _need_root()
    try:
        lab = Lab.load(a.name, a.state_dir)
    except LabNotFound:
        d = lab_dir(a.name, a.state_dir)
        remove_stale_dir(d)
        print(f"nothing to do: no lab {a.name!r} in {d.parent}")
        return 0
    done = lab.down()
    print(f"lab {a.name!r} removed: ended {len(done['killed'])} process(es), "
          f"deleted {len(done['deleted_netns'])} namespace(s)")
    return 0


def _cmd_list(a) -> int:
    root = a.state_dir or default_state_root()
    names = Lab.list(root)
    if a.json:
        out = []
        for name in names:
            try:
                lab = Lab.load(name, root)
                out.append({"name": name, "nodes": len(lab.nodes),
                            "state_dir": str(lab.state_dir), "complete": lab.state.complete})
            except LabError as e:
                out.append({"name": name, "error": str(e)})
        print(json.dumps(out, indent=2))
    elif names:
        print("\n".join(names))
    else:
        print(f"no labs in {root}", file=sys.stderr)
    return 0


def _cmd_demo(a) -> int:
    _need_root()
    from .demo import run

    return run(a.name, keep=a.keep, nodes=a.nodes, state_root=a.state_dir, policy=a.policy)


def _labels(text: str) -> dict[str, str]:
    out = {}
    for item in (i.strip() for i in text.split(",") if i.strip()):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise LabError(f"--labels: {item!r} is not KEY=VALUE")
        out[key] = value
    return out


def _ports(text: str) -> list[dict]:
    out = []
    for item in (i.strip() for i in text.split(",") if i.strip()):
        name, sep, rest = item.partition("=")
        number, _, proto = rest.partition("/")
        if not sep or not name or not number.isdigit():
            raise LabError(f"--ports: {item!r} is not NAME=PORT[/PROTOCOL]")
        out.append({"name": name, "containerPort": int(number), "protocol": (proto or "TCP").upper()})
    return out


def _cmd_kube(a) -> int:
    _need_root()
    from . import kube

    lab = Lab.load(a.name, a.state_dir)
    if a.command == "label":
        print(kube.label(lab, a.target, a.changes))
        return 0
    if a.filename == "-":
        text, source = sys.stdin.read(), "<stdin>"
    else:
        try:
            with open(a.filename) as f:
                text, source = f.read(), a.filename
        except OSError as e:
            raise LabError(f"cannot read {a.filename}: {e.strerror}") from None
    outcomes = (kube.apply if a.command == "apply" else kube.delete)(lab, text, source)
    for outcome in outcomes:
        print(outcome)
    return 1 if any(o.action == "not found" for o in outcomes) else 0


def _cmd_pod(a) -> int:
    _need_root()
    from . import pods

    lab = Lab.load(a.name, a.state_dir)
    if a.pod_command == "add":
        pod = pods.add_pod(lab, a.node, a.pod, labels=_labels(a.labels), ports=_ports(a.ports))
        print(pod.ip)
    elif a.pod_command == "del":
        pods.del_pod(lab, a.pod)
        print(f"pod {a.pod} deleted")
    elif a.json:
        print(json.dumps([{"pod": p.key, "node": p.node, "ips": p.ips, "netns": p.netns,
                           "containerID": p.container_id, "labels": p.labels} for p in pods.list_pods(lab)],
                         indent=2))
    else:
        for p in pods.list_pods(lab):
            print(f"{p.key:<32} {p.node:<8} {', '.join(p.ips) or '-':<20} netns {p.netns}")
    return 0


_COMMANDS = {"up": _cmd_up, "status": _cmd_status, "exec": _cmd_exec, "pod": _cmd_pod,
             "down": _cmd_down, "list": _cmd_list, "demo": _cmd_demo, "apply": _cmd_kube, "delete": _cmd_kube,
             "label": _cmd_kube, "inventory": _cmd_inventory}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        # Everything after the first "--" is the command for `exec`, kept
        # away from argparse so its options are not taken for ours.
        tail = None
        if "--" in argv:
            i = argv.index("--")
            argv, tail = argv[:i], argv[i + 1:]
        args = _parser().parse_args(argv)
        if tail is not None:
            if args.command != "exec":
                raise LabError(f"unexpected arguments after --: {' '.join(tail)}")
            args.cmd = list(args.cmd) + tail
        return _COMMANDS[args.command](args)
    except LabError as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except SystemExit as e:  # --help
        return e.code if isinstance(e.code, int) else 0
    except Exception as e:
        if os.environ.get("CALICO_LAB_DEBUG"):
            raise
        print(f"{PROG}: unexpected error: {type(e).__name__}: {e} "
              f"(set CALICO_LAB_DEBUG=1 for a traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
