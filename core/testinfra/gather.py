"""Everything the checks need from one node, fetched with one remote command.

A remote command can cost a second over testinfra's ansible backend, so :func:`gather`
sends a single ``sh`` script that runs every probe on the node at once (background
jobs, each writing its output to a private temporary directory) and prints the
results as sections, each under a marker line ``<token> <name> <exit status>
out|err``. The token is random per run, so no command output can forge a marker.
What the sections mean is decided on the controller (:mod:`.view`), with pycalico's
own code.
"""

from __future__ import annotations

import re
import secrets
import shlex
from collections.abc import Iterable, Mapping

import attrs

# Calico's CNI config file name (CNI_CONF_NAME, ``cni-plugin/pkg/install/install.go``).
CONFLIST = "10-calico.conflist"
# The resources the checks read, by ``calicoctl get`` name; workload endpoints tell
# which node a borrowed address lives on.
RESOURCES = {
    "Node": ("nodes",),
    "BGPPeer": ("bgppeers",),
    "BGPConfiguration": ("bgpconfigurations",),
    "IPPool": ("ippools",),
    "FelixConfiguration": ("felixconfigurations",),
    "WorkloadEndpoint": ("workloadendpoints", "--all-namespaces"),
}
COMMAND_TIMEOUT = 60  # seconds for each probe on the node
CONFIG_REFS = (
    """sed -n 's/.*"calico_config" *: *"\\([^"]*\\)".*/\\1/p' "$1" | """
    """while IFS= read -r p; do if [ -f "$p" ]; then echo "ok $p"; else echo "missing $p"; fi; done"""
)


@attrs.frozen
class Settings:
    """Where things are on the node (the suite's command-line options)."""

    calico_config: str = "/etc/calico/calico.toml"
    calico_bin: str = ""  # "": calico-node and calicoctl from the node's PATH
    cni_bin_dirs: tuple[str, ...] = ("/opt/cni/bin",)
    cni_conf_dir: str = "/etc/cni/net.d"

    @property
    def conflist(self) -> str:
        return f"{self.cni_conf_dir.rstrip('/')}/{CONFLIST}"


@attrs.frozen
class Output:
    """One probe: its exit status and what it printed (127: the command is missing)."""

    rc: int
    out: str
    err: str

    @property
    def ok(self) -> bool:
        return self.rc == 0

    def failure(self, what: str) -> str:
        """``what`` failed, with the exit status and the first lines it printed."""
        said = (self.err.strip() or self.out.strip()).splitlines()[:5]
        return f"{what} failed (exit {self.rc})" + (": " + " | ".join(said) if said else "")


def probes(settings: Settings) -> dict[str, list[str]]:
    """Section name -> argv, in the order the sections are printed."""
    cfg = settings.calico_config
    cmds: dict[str, list[str]] = {
        "config": ["cat", cfg],
        "hostname": ["hostname"],
        "check_config": ["calico-node", "--check-config", "--config", cfg],
        "felix": ["calico-node", "-felix-live", "-felix-ready", "--config", cfg],
        "bird": ["calico-node", "-bird-live", "-bird-ready", "--config", cfg],
        "node_status": ["calicoctl", "node", "status"],
        "ipam_check": ["calicoctl", "ipam", "check", "--show-problem-ips"],
        "routes": ["ip", "-j", "-4", "route", "show", "table", "main"],
        "links": ["ip", "-d", "-j", "link", "show"],
        "addrs": ["ip", "-j", "-4", "addr", "show"],
        "iptables_version": ["iptables", "--version"],
        "iptables_nft": ["iptables-nft-save"],
        "iptables_legacy": ["iptables-legacy-save"],
        "nft": ["nft", "-j", "list", "table", "inet", "calico"],
        "conflist": ["cat", settings.conflist],
        # pycalico's calico_config key names a file on the node: is it there?
        "calico_config_refs": ["sh", "-c", CONFIG_REFS, "sh", settings.conflist],
        # Every executable file in the CNI directories, one path a line.
        "cni_bin": ["sh", "-c", 'for d; do for f in "$d"/*; do [ -f "$f" ] && [ -x "$f" ] && echo "$f"; done; done',
                    "sh", *settings.cni_bin_dirs],
    }
    for kind, (plural, *flags) in RESOURCES.items():
        cmds[kind] = ["calicoctl", "get", plural, *flags, "-o", "json"]
    return cmds


def script(settings: Settings, commands: Mapping[str, list[str]], token: str) -> str:
    """The ``sh`` script that runs ``commands`` side by side and prints their sections."""
    q = shlex.quote
    lines = [
        "t=$(mktemp -d) || exit 1",
        "trap 'rm -rf \"$t\"' EXIT",
        # calicoctl reads the datastore and BIRD's socket from the node's calico.toml.
        f"export CALICO_CONFIG={q(settings.calico_config)}",
    ]
    if settings.calico_bin:
        lines.append(f"export PATH={q(settings.calico_bin)}:\"$PATH\"")
    lines.append("to=''; command -v timeout >/dev/null 2>&1 && to='timeout " + str(COMMAND_TIMEOUT) + "'")
    for i, argv in enumerate(commands.values()):
        lines.append(f"( $to {' '.join(q(a) for a in argv)} >\"$t/{i}.out\" 2>\"$t/{i}.err\" </dev/null; "
                     f"echo $? >\"$t/{i}.rc\" ) &")
    lines.append("wait")
    for i, name in enumerate(commands):
        for stream in ("out", "err"):
            lines.append(f"printf '\\n%s %s %s {stream}\\n' {q(token)} {q(name)} \"$(cat \"$t/{i}.rc\" 2>/dev/null || echo 255)\"")
            lines.append(f"cat \"$t/{i}.{stream}\" 2>/dev/null")
    return "\n".join(lines) + "\n"


def parse(text: str, token: str, names: Iterable[str]) -> dict[str, Output]:
    """The sections of the script's output; a section that never came is exit 255."""
    # The end of the text may have lost its newline (Ansible's shell module strips it).
    marker = re.compile(rf"^\n?{re.escape(token)} (\S+) (\d+) (out|err)(?:\n|\Z)", re.M)
    found: dict[str, dict] = {}
    matches = list(marker.finditer(text))
    for m, nxt in zip(matches, [*matches[1:], None]):
        body = text[m.end(): nxt.start() if nxt else len(text)]
        found.setdefault(m[1], {"rc": int(m[2])})[m[3]] = body
    return {
        name: Output(found[name]["rc"], found[name].get("out", ""), found[name].get("err", ""))
        if name in found else Output(255, "", "no output from the node (the command did not run)")
        for name in names
    }


def gather(host, settings: Settings) -> dict[str, Output]:
    """Run every probe on testinfra ``host`` in one command; its sections by name."""
    token = "@@pycalico-" + secrets.token_hex(8)
    commands = probes(settings)
    result = host.run("sh -c %s", script(settings, commands, token))
    if result.rc != 0 and token not in result.stdout:
        text = (result.stderr or result.stdout).strip()
        raise RuntimeError(f"the probe script did not run on the node (exit {result.rc}): {text[:500]}")
    return parse(result.stdout, token, commands)
