"""``calicoctl node status`` (``calicoctl/calicoctl/commands/node/status.go``).

Calico's output: ``Calico process is running.``, then for each IP version a heading and
the BGP peer table BIRD's ``show protocols`` yields (PEER ADDRESS, PEER TYPE, STATE,
SINCE, INFO, drawn as olekukonko/tablewriter draws it: centred upper-case headings),
or ``No IPv4 peers found.``. Peers are BIRD's protocols named ``Mesh_``, ``Node_`` or
``Global_`` and an address with ``_`` for its separators.

Adapted to a machine that runs several nodes in network namespaces: the calico-node and
BIRD processes counted are those in calicoctl's own network namespace (Calico looks at
every process of its container). BIRD's socket is ``[routing.bird] socket`` of
calico.toml (``$CALICO_CONFIG``, else ``/etc/calico/calico.toml``), else Calico's
``/var/run/calico/bird.ctl``. One BIRD 2 serves both IP versions, so both tables come
from that socket (Calico runs ``bird`` and ``bird6``).
"""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path

from pycalico.core.ctl import cli
from pycalico.core.ctl.cli import Context, Opt

DOC = """\
Usage:
  calicoctl node <command> [<args>...]

    status       View the current status of a Calico node.

Options:
  -h --help      Show this screen.

Description:
  Node specific commands for calicoctl.  These commands must be run directly on
  the compute host running the Calico node instance.

  See 'calicoctl node <command> --help' to read about a specific subcommand.
"""

STATUS_DOC = """\
Usage:
  calicoctl node status [--allow-version-mismatch]

Options:
  -h --help                    Show this screen.
     --allow-version-mismatch  Allow client and cluster versions mismatch.

Description:
  Check the status of the Calico node instance.  This includes the status and
  uptime of the node instance, and BGP peering states.
"""

DEFAULT_SOCKET = "/var/run/calico/bird.ctl"
PEER_NAME = re.compile(r"^(Global|Node|Mesh)_(.+)$")
PEER_TYPES = {"Global": "global", "Mesh": "node-to-node mesh", "Node": "node specific"}
HEADER = ["Peer address", "Peer type", "State", "Since", "Info"]


def run(argv: list[str], ctx: Context) -> int:
    """``calicoctl node <command>``; ``argv[0]`` is ``node``."""
    command = cli.command_group(argv, ctx, DOC, ("status",))
    if isinstance(command, int):
        return command
    args = argv[1:]
    try:
        values, positional = cli.parse([Opt("--allow-version-mismatch")], args[1:])
    except cli.UsageError:
        positional = argv
    if positional:
        ctx.err(cli.invalid_option(argv))
        return 1
    if values["help"]:
        ctx.out(STATUS_DOC)
        return 0
    return status(ctx)


def status(ctx: Context, proc: Path = Path("/proc")) -> int:
    names = _processes_here(proc)
    if "calico-node" not in names:
        ctx.err("Calico process is not running.\n")
        return 1
    ctx.out("Calico process is running.\n")
    if "bird" not in names:
        ctx.out("\nThe BGP backend process (BIRD) is not running.\n\n")
        return 0
    from pycalico.plugins.routing.bird import control

    path = bird_socket(ctx)
    try:
        rows = peers(control.protocols(path))
    except control.BirdError as exc:
        ctx.out(f"\nIPv4 BGP status\nError querying BIRD: unable to connect to BIRDv4 socket: {exc}\n\n")
        return 0
    for version in (4, 6):
        ctx.out(f"\nIPv{version} BGP status\n")
        mine = [r for r in rows if ipaddress.ip_address(r[0]).version == version]
        ctx.out(table(HEADER, mine) if mine else f"No IPv{version} peers found.\n")
    ctx.out("\n")
    return 0


def bird_socket(ctx: Context) -> str:
    """``[routing.bird] socket`` of the node's calico.toml, or Calico's default."""
    from pycalico.core import config as cfg

    return socket_of(Path(ctx.env.get("CALICO_CONFIG") or cfg.DEFAULT_PATH))


def socket_of(path: Path) -> str:
    """BIRD's socket as the calico.toml at ``path`` sets it; Calico's default when the
    file is missing or invalid, or routing is not bird."""
    from pycalico.core import config as cfg
    from pycalico.core.plugins import PluginError, Plugins

    if not path.exists():
        return DEFAULT_SOCKET
    try:
        config = Plugins.load(cfg.read(path), str(path), configure=False, slots=("routing",)).config
    except (cfg.ConfigError, PluginError):
        return DEFAULT_SOCKET
    options = config.routing.options
    return getattr(options, "socket", DEFAULT_SOCKET) if config.routing.type == "bird" else DEFAULT_SOCKET


def peers(protocols) -> list[list[str]]:
    """Table rows for BIRD's BGP protocols that carry a Calico peer name."""
    rows = []
    for p in protocols:
        m = PEER_NAME.match(p.name)
        if p.proto != "BGP" or not m:
            continue
        address = peer_address(m[2])
        if address is None:
            continue
        rows.append([address, PEER_TYPES[m[1]], p.state, p.since, p.info])
    return rows


def peer_address(encoded: str) -> str | None:
    """``198_51_100_12`` or ``fd80_24e2__2`` (a ``_port_N`` suffix dropped) as an address."""
    encoded = encoded.split("_port_")[0]
    for sep in (".", ":"):
        try:
            return str(ipaddress.ip_address(encoded.replace("_", sep)))
        except ValueError:
            continue
    return None


def table(header: list[str], rows: list[list[str]]) -> str:
    """tablewriter's default table: ``+-|`` borders, one space of padding, headings
    upper-cased and centred (the odd space of padding on the right), cells left-aligned,
    a cell wider than 30 wrapped onto more lines (the column then 30 wide)."""
    header = [h.upper() for h in header]
    cells = [[_wrap(c) for c in r] for r in rows]
    widths = [len(h) for h in header]
    for r, wrapped in zip(rows, cells):
        for i, (text, lines) in enumerate(zip(r, wrapped)):
            widths[i] = max(widths[i], min(len(text), WRAP_WIDTH), *(len(line) for line in lines))
    line = "+" + "+".join("-" * (w + 2) for w in widths) + "+\n"

    def centred(text: str, width: int) -> str:
        gap = width - len(text)
        return " " * (gap // 2) + text + " " * (gap - gap // 2)

    out = [line, "|" + "|".join(f" {centred(h, w)} " for h, w in zip(header, widths)) + "|\n", line]
    for r in cells:
        for k in range(max(len(lines) for lines in r)):
            texts = [lines[k] if k < len(lines) else "" for lines in r]
            out.append("|" + "|".join(f" {t.ljust(w)} " for t, w in zip(texts, widths)) + "|\n")
    out.append(line)
    return "".join(out)


WRAP_WIDTH = 30  # tablewriter's MAX_ROW_WIDTH


def _wrap(text: str) -> list[str]:
    """tablewriter's WrapString: words split on single spaces, broken into lines of
    at most 30 with the least raggedness (squared slack of every line but the last)."""
    if len(text) <= WRAP_WIDTH:
        return [text]
    words = text.split(" ")
    n = len(words)
    cost, brk = [0] * (n + 1), [n] * n

    def width(i: int, j: int) -> int:  # words[i:j] on one line
        return sum(len(w) for w in words[i:j]) + (j - i - 1)

    for i in range(n - 1, -1, -1):
        if width(i, n) <= WRAP_WIDTH:
            cost[i], brk[i] = 0, n
            continue
        best = None
        for j in range(i + 1, n):
            slack = WRAP_WIDTH - width(i, j)
            c = slack * slack + cost[j] + (100000 if slack < 0 else 0)
            if best is None or c < best:
                best, brk[i] = c, j
        cost[i] = best
    lines, i = [], 0
    while i < n:
        lines.append(" ".join(words[i : brk[i]]))
        i = brk[i]
    return lines


def _processes_here(proc: Path) -> set[str]:
    """Names (``calico-node``, ``bird``) of the processes in this thread's network namespace."""
    from pycalico.core.nsenter import netns_id

    here = netns_id()[0]
    found = set()
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.stat(entry / "ns" / "net").st_ino != here:
                continue
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue  # gone, or a kernel thread
        if os.path.basename(argv[0]) == b"bird":
            found.add("bird")
        if _is_agent(argv):
            found.add("calico-node")
    return found


def _is_agent(argv: list[bytes]) -> bool:
    """calico-node, as its console script or as ``python -m pycalico.core.node``."""
    if b"calico-node" in (os.path.basename(a) for a in argv[:2]):
        return True
    return any(argv[i : i + 2] == [b"-m", b"pycalico.core.node"] for i in range(1, 3))
