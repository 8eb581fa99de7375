"""``calicoctl ipam``: ``show``, ``check``, ``release`` and ``configure``
(``calicoctl/calicoctl/commands/ipam.go``, ``ipam_command.go`` and ``ipam/*.go``), on the
calico-ipam library (``pycalico.plugins.ipam.calico_ipam``).

What each prints, and its exit code, follows Calico:

* ``show``: the utilization table (GROUPING, CIDR, IPS TOTAL, IPS IN USE, IPS RESERVED,
  IPS FREE, IPS COOLING, with percentages of the total), rendered as go-pretty's default
  table style renders it; ``--show-blocks`` adds a row per block, ``--show-borrowed``
  lists addresses held by a node other than their block's, ``--show-configuration``
  the IPAMConfig, ``--ip`` who holds one address.
* ``check``: Calico's progress lines and counts. An address is in use when a
  WorkloadEndpoint lists it, or a Node names it as a tunnel address (VXLAN, IPIP,
  WireGuard); an allocation in use by nothing is leaked, a handle no allocation names is
  leaked. Addresses cooling down after a release, Windows' reserved ones and those of an
  allocation type this code does not know are never called leaked. ``-o FILE`` writes
  Calico's report (``CheckReport``: version, clusterGUID, datastoreLocked,
  clusterInformationRevision, clusterType, allocations, leakedHandles).

  pycalico adds one section before the total: the inconsistencies calico-ipam's own
  check finds in blocks, affinities and handle counts (a claim or release a crash left
  half done, blocks of nodes that no longer exist, ...), which Calico leaves to its
  garbage collector. They count as problems and go into the report under
  ``inconsistencies`` (a key Calico's reader ignores).
* ``release --from-report``: Calico's safety rules. The report must come from this
  cluster (clusterGUID) and this calicoctl version (unless ``--force``); at least one
  report must carry the current ClusterInformation revision (an older one is stale);
  the datastore must be locked (ClusterInformation ``datastoreReady: false``) unless
  ``--force``. Only what every report calls leaked is released, each address only if it
  still has the handle and sequence number the report saw, each handle only if it is
  still at the revision the report saw. Then the report's inconsistencies that a fresh
  check still finds are repaired, each with compare-and-swap.
* ``configure``: sets StrictAffinity, MaxBlocksPerHost, KubeVirtVMAddressPersistence
  and IPCooldownSeconds of IPAMConfig ``default`` with Calico's checks.

Not here: ``ipam split`` (an unknown sub-command prints the usage, as Calico does),
``check --kubeconfig`` and the LoadBalancer Service section of ``check`` (the
datastore interface reads no Kubernetes Services).
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import sys
from dataclasses import dataclass, field
from typing import Any

from pycalico.core.ctl import cli, commands
from pycalico.core.ctl.cli import Context, Opt

# --- usage texts -----------------------------------------------------------------------------

_CONFIG_HELP = """\
  -c --config=<CONFIG>         The calico.toml naming the datastore. Without it:
                               $CALICO_CONFIG, else DATASTORE_TYPE, ETCD_ENDPOINTS,
                               ETCD_*_FILE and KUBECONFIG from the environment.
     --allow-version-mismatch  Allow client and cluster versions mismatch.
"""

DOC = """\
Usage:
  calicoctl ipam <command> [<args>...]

    check            Check the integrity of the IPAM datastructures.
    release          Release a Calico assigned IP address.
    show             Show details of a Calico configuration,
                     assigned IP address, or of overall IP usage.
    configure        Configure IPAM

Options:
  -h --help      Show this screen.

Description:
  IP address management commands for Calico.

  See 'calicoctl ipam <command> --help' to read about a specific subcommand.
"""

DOCS = {
    "show": f"""\
Usage:
  calicoctl ipam show [--ip=<IP> | --show-blocks | --show-borrowed | --show-configuration]
                      [--config=<CONFIG>] [--allow-version-mismatch]

Options:
  -h --help                    Show this screen.
     --ip=<IP>                 Report whether this specific IP address is in use.
     --show-blocks             Show detailed information for IP blocks as well as pools.
     --show-borrowed           Show detailed information for "borrowed" IP addresses.
     --show-configuration      Show current Calico IPAM configuration.
{_CONFIG_HELP}
Description:
  The ipam show command prints information about a given IP address, or about
  overall IP usage.
""",
    "check": f"""\
Usage:
  calicoctl ipam check [--config=<CONFIG>] [--show-all-ips] [--show-problem-ips] [-o <FILE>]
                       [--allow-version-mismatch]

Options:
  -h --help                    Show this screen.
  -o --output=<FILE>           Path to output report file.
     --show-all-ips            Print all IPs that are checked.
     --show-problem-ips        Print all IPs that are leaked or not allocated properly.
{_CONFIG_HELP}
Description:
  The ipam check command checks the integrity of the IPAM datastructures against
  the workload endpoints and nodes that use the addresses, and the IPAM blocks,
  affinities and handles against each other.
""",
    "release": f"""\
Usage:
  calicoctl ipam release [--ip=<IP>] [--from-report=<REPORT>]... [--config=<CONFIG>] [--force]
                         [--allow-version-mismatch]

Options:
  -h --help                    Show this screen.
     --ip=<IP>                 IP address to release.
     --from-report=<REPORT>    Release all leaked addresses from the report.  If multiple reports are specified then
                               only leaked IPs common to all reports will be released - by generating reports at
                               different times, e.g. separated by an hour, this can be used to provide additional
                               certainty that the IPs are truly leaked rather than in a transient state of assignment.
                               At least one of the reports should be newly generated.
     --force                   Force release of leaked addresses.
{_CONFIG_HELP}
Description:
  The ipam release command releases an IP address from the Calico IP Address
  Manager that was been previously assigned to an endpoint.  When an IP address
  is released, it becomes available for assignment to any endpoint.

  Note that this does not remove the IP from any existing endpoints that may be
  using it, so only use this command to clean up addresses from endpoints that
  were not cleanly removed from Calico.
""",
    "configure": """\
Usage:
  calicoctl ipam configure [--strictaffinity=<true/false>]
                           [--max-blocks-per-host=<number>]
                           [--kubevirt-ip-persistence=<Enabled|Disabled>]
                           [--ip-cooldown-seconds=<seconds>]
                           [--config=<CONFIG>]
                           [--allow-version-mismatch]

Options:
  -h --help                        Show this screen.
     --strictaffinity=<true/false>  Set StrictAffinity to true/false. When StrictAffinity
                                    is true, borrowing IP addresses is not allowed.
     --max-blocks-per-host=<number> Set the maximum number of blocks that can be affine to a host.
     --kubevirt-ip-persistence=<Enabled|Disabled>
                                    Control whether KubeVirt VMs retain persistent IP addresses
                                    across lifecycle events.
     --ip-cooldown-seconds=<seconds>
                                    Set the minimum time between release and re-allocation of
                                    an IP address (0 to 1200).
  -c --config=<CONFIG>              The calico.toml naming the datastore. Without it:
                                    $CALICO_CONFIG, else DATASTORE_TYPE, ETCD_ENDPOINTS,
                                    ETCD_*_FILE and KUBECONFIG from the environment.
     --allow-version-mismatch       Allow client and cluster versions mismatch.

Description:
 Modify configuration for Calico IP address management.
""",
}

_COMMON = [Opt("--config", "-c", value=True), Opt("--allow-version-mismatch")]
OPTIONS = {
    "show": [*_COMMON, Opt("--ip", value=True), Opt("--show-blocks"), Opt("--show-borrowed"),
             Opt("--show-configuration")],
    "check": [*_COMMON, Opt("--show-all-ips"), Opt("--show-problem-ips"), Opt("--output", "-o", value=True)],
    "release": [*_COMMON, Opt("--ip", value=True), Opt("--force")],  # --from-report is collected apart
    "configure": [*_COMMON, Opt("--strictaffinity", value=True), Opt("--max-blocks-per-host", value=True),
                  Opt("--kubevirt-ip-persistence", value=True), Opt("--ip-cooldown-seconds", value=True)],
}

WINDOWS_RESERVED_HANDLE = "windows-reserved-ipam-handle"  # Calico's ipam.WindowsReservedHandle
TUNNEL_TYPES = ("ipipTunnelAddress", "vxlanTunnelAddress", "vxlanV6TunnelAddress", "wireguardTunnelAddress",
                "wireguardV6TunnelAddress")
# calico-ipam check findings reported in check's own section (the rest are Calico's
# categories already: leaked addresses, missing handles, ...).
INCONSISTENCIES = ("block-bookkeeping", "block-of-missing-node", "stale-affinity", "affinity-without-block",
                   "unconfirmed-affinity", "block-without-affinity", "empty-unaffine-block", "block-outside-pools",
                   "overlapping-blocks", "handle-count")


class Failure(Exception):
    """A command error: printed on stderr (Calico returns it to main), exit code 1."""


class Exit(Exception):
    """Calico printed on stdout and exited (``argutils.ValidateIP``)."""

    def __init__(self, text: str, code: int = 1):
        super().__init__(text)
        self.text, self.code = text, code


# --- dispatch --------------------------------------------------------------------------------


def run(argv: list[str], ctx: Context) -> int:
    """``calicoctl ipam <command> [<args>...]``; ``argv[0]`` is ``ipam``."""
    handlers = {"show": _show, "check": _check, "release": _release, "configure": _configure}
    command = cli.command_group(argv, ctx, DOC, handlers)
    if isinstance(command, int):
        return command
    handler, args = handlers[command], argv[1:]
    sub = ["ipam", *args]
    reports: list[str] = []
    if command == "release":
        try:
            args, reports = _take_repeated(args, "--from-report")
        except cli.UsageError:
            return _usage_error(ctx, command, sub)
    try:
        values, positional = cli.parse(OPTIONS[command], args[1:])
    except cli.UsageError:
        return _usage_error(ctx, command, sub)
    if values["help"]:
        ctx.out(DOCS[command])
        return 0
    if positional:
        return _usage_error(ctx, command, sub)
    if command == "show" and sum(bool(values[k]) for k in ("ip", "show-blocks", "show-borrowed",
                                                           "show-configuration")) > 1:
        return _usage_error(ctx, command, sub)
    values["from-report"] = reports
    return _session(ctx, values, lambda datastore: handler(ctx, values, datastore))


def _usage_error(ctx: Context, command: str, argv: list[str]) -> int:
    ctx.err(cli.usage_section(DOCS[command]))
    ctx.err(cli.invalid_option(argv))
    return 1


def _take_repeated(args: list[str], name: str) -> tuple[list[str], list[str]]:
    """Remove every ``name=V`` / ``name V`` from ``args`` (docopt's ``[...]...``)."""
    rest, found = [], []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            rest += args[i:]
            break
        if arg == name:
            if i + 1 >= len(args):
                raise cli.UsageError(f"{name} requires a value")
            found.append(args[i + 1])
            i += 2
            continue
        if arg.startswith(name + "="):
            found.append(arg.split("=", 1)[1])
        else:
            rest.append(arg)
        i += 1
    return rest, found


def _session(ctx: Context, values: dict, body) -> int:
    """Connect, check the cluster's version, run ``body(datastore)``; errors are one line."""
    from pycalico.core.datastore import DatastoreError
    from pycalico.plugins.ipam.calico_ipam import IPAMError

    datastore = commands.connect(ctx, values["config"])
    if datastore is None:
        return 1
    try:
        try:
            problem = commands.version_mismatch(
                datastore, values["allow-version-mismatch"] or ctx.allow_version_mismatch)
        except commands.Unreachable as exc:
            ctx.out(f"Failed to create Calico API client: {exc}\n")
            return 1
        if problem:
            ctx.err(f"{problem}\n")
            return 1
        try:
            return body(datastore)
        except Exit as exc:
            ctx.out(exc.text)
            return exc.code
        except Failure as exc:
            ctx.err(f"{exc}\n")
            return 1
        except (DatastoreError, IPAMError) as exc:
            ctx.err(f"{commands._one_line(exc)}\n")
            return 1
    finally:
        commands._close(datastore)


def _ipam(datastore):
    from pycalico.plugins.ipam.calico_ipam import IPAM

    return IPAM(datastore, node=socket.gethostname() or "calicoctl")


def _validate_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """``argutils.ValidateIP``: an address (not a CIDR, no zone), else Calico's line and exit 1."""
    try:
        if "%" in text:
            raise ValueError(text)
        return ipaddress.ip_address(text)
    except ValueError:
        raise Exit(f"Error executing command: invalid IP address specified: {text}\n") from None


def _not_found(exc, kind: str, name: str) -> Failure:
    from pycalico.core.ctl.resources import translate

    return Failure(str(translate(exc, kind, name, None)))


# --- tables (go-pretty's StyleDefault, as calicoctl ipam prints them) -----------------------


def render_table(header: list[str], rows: list[list[str]], right: tuple[int, ...] = ()) -> str:
    """Borders of ``+``, ``-`` and ``|``, one space of padding, header left-aligned,
    columns in ``right`` right-aligned in data rows; empty table: header only."""
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(header)]
    line = "+" + "+".join("-" * (w + 2) for w in widths) + "+\n"

    def row(cells: list[str], data: bool) -> str:
        out = []
        for i, (cell, width) in enumerate(zip(cells, widths)):
            out.append(" " + (cell.rjust(width) if data and i in right else cell.ljust(width)) + " ")
        return "|" + "|".join(out) + "|\n"

    return line + row(header, False) + line + "".join(row(r, True) for r in rows) + line


def go_g5(value: float) -> str:
    """Go's ``%.5g`` (the same as C's for finite numbers)."""
    return "%.5g" % value


def _with_percentage(n: int, capacity: int) -> str:
    if not capacity:
        return f"{go_g5(n)} (NaN%)"
    return f"{go_g5(n)} ({100 * n / capacity:.0f}%)"


# --- show --------------------------------------------------------------------------------------


USAGE_HEADER = ["GROUPING", "CIDR", "IPS TOTAL", "IPS IN USE", "IPS RESERVED", "IPS FREE", "IPS COOLING"]


def _show(ctx: Context, values: dict, datastore) -> int:
    ipam = _ipam(datastore)
    if values["ip"] is not None:
        return _show_ip(ctx, ipam, values["ip"])
    if values["show-blocks"]:
        ctx.out(utilization_table(ipam, show_blocks=True))
    elif values["show-borrowed"]:
        ctx.out(borrowed_table(ipam))
    elif values["show-configuration"]:
        ctx.out(configuration_table(ipam))
    else:
        ctx.out(utilization_table(ipam, show_blocks=False))
    return 0


def _show_ip(ctx: Context, ipam, text: str) -> int:
    from pycalico.plugins.ipam.calico_ipam import NotAssigned

    ip = _validate_ip(text)
    try:
        held = ipam.get_assignment_attributes(ip)
    except NotAssigned:
        ctx.out(f"{ip} is not assigned\n")
        return 0
    ctx.out(f"IP {ip} is in use\n")
    ctx.out(f"Handle ID: {held.handle_id}\n" if held.handle_id is not None else "Handle ID: <none>\n")
    active = _owner_attrs("Active Owner Attributes", held.attrs)
    ctx.out(active or "No Active Owner attributes defined\n")
    block = ipam.store.block(held.block)
    attribute = block.attribute(block.ordinal(ip)) if block is not None else None
    if attribute is not None and attribute.alternate:
        ctx.out(_owner_attrs("Alternate Owner Attributes", attribute.alternate))
    return 0


def _owner_attrs(title: str, attrs: dict | None) -> str:
    if not attrs:
        return ""
    return f"{title}:\n" + "".join(f"  {k}: {attrs[k]}\n" for k in sorted(attrs))


@dataclass
class Usage:
    """One row of ``calicoctl ipam show``: capacity and counts of a pool or a block."""

    cidr: str
    capacity: int
    in_use: int = 0  # cooling down included, as Calico counts them
    cooling: int = 0
    reserved: int = 0  # every reserved address, held or not
    held_reserved: int = 0  # reserved addresses that are in use anyway
    unallocated: int | None = None  # blocks: the block's free list

    @property
    def free(self) -> int:
        base = self.capacity - self.in_use if self.unallocated is None else self.unallocated
        return max(base - (self.reserved - self.held_reserved), 0)

    def row(self, grouping: str) -> list[str]:
        return [grouping, self.cidr, go_g5(self.capacity), _with_percentage(self.in_use, self.capacity),
                _with_percentage(self.reserved, self.capacity), _with_percentage(self.free, self.capacity),
                _with_percentage(self.cooling, self.capacity)]


def utilization(ipam) -> list[tuple[Usage | None, list[Usage]]]:
    """Calico's GetUtilization: per IP pool (disabled ones too, in name order) its usage
    and its blocks'; last, with no pool usage, the blocks that are in no pool. A block
    belongs to the first pool containing it."""
    from pycalico.plugins.ipam.calico_ipam import pools as pool_math
    from pycalico.plugins.ipam.calico_ipam.blocks import view

    now = ipam.clock()
    cooldown = ipam.store.config().spec.ip_cooldown_seconds or 0
    reserved = pool_math.Reservations(ipam.store.reservations())
    all_pools = ipam.store.pools()
    groups: dict[str, tuple[Usage | None, list[Usage]]] = {}
    for p in all_pools:
        net = pool_math.network(p)
        groups[p.metadata.name] = (Usage(str(net), net.num_addresses, reserved=reserved.count_in(net)), [])
    orphans: list[Usage] = []
    for raw in sorted(ipam.store.blocks(), key=lambda b: (b.network.version, b.network)):
        b = view(raw, now, cooldown)
        held = b.in_use() + b.cooling()
        usage = Usage(b.cidr, b.size, in_use=len(held), cooling=len(b.cooling()),
                      reserved=reserved.count_in(b.network) if reserved else 0,
                      held_reserved=sum(1 for o in held if reserved(b.ip(o))) if reserved else 0,
                      unallocated=len(b.unallocated))
        owner = pool_math.containing(all_pools, b.network)
        if owner is None:
            orphans.append(usage)
            continue
        total, blocks = groups[owner.metadata.name]
        blocks.append(usage)
        total.in_use += usage.in_use
        total.cooling += usage.cooling
        total.held_reserved += usage.held_reserved
    out = list(groups.values())
    if orphans:
        out.append((None, orphans))
    return out


def utilization_table(ipam, show_blocks: bool) -> str:
    """Calico's ShowBlockUtilization: a row per IP pool (none for the blocks that are in
    no pool), followed by its blocks' rows with ``show_blocks``. IN USE counts addresses
    cooling down; an address both reserved and held counts in IN USE and in RESERVED."""
    rows: list[list[str]] = []
    for pool_usage, blocks in utilization(ipam):
        if pool_usage is not None:
            rows.append(pool_usage.row("IP Pool"))
        if show_blocks:
            rows += [b.row("Block") for b in blocks]
    return render_table(USAGE_HEADER, rows, right=(2, 3, 4, 5, 6))


def borrowed_table(ipam) -> str:
    """Calico's ShowBorrowedDetails: addresses held by a node other than the block's
    (any address of a block affine to nobody that names a node). Addresses cooling
    down are held by nobody and are left out."""
    rows, unclassified = [], 0
    for b in sorted(ipam.store.blocks(), key=lambda b: (b.network.version, b.network)):
        owner = ""
        if b.affinity:
            parts = b.affinity.split(":")
            owner = parts[1] if len(parts) == 2 else parts[0]
        for o in b.in_use():
            a = b.attribute(o)
            attrs = (a.secondary if a is not None else None) or {}
            node = attrs.get("node")
            if node is None:
                unclassified += 1
                continue
            if node == owner:
                continue
            kind, to = "", ""
            namespace = attrs.get("namespace", "")
            if "pod" in attrs:
                kind, to = "pod", f"{namespace}/{attrs['pod']}"
            elif "type" in attrs:
                kind = attrs["type"]
            rows.append([str(b.ip(o)), node, b.cidr, owner, kind, to])
    out = render_table(["IP", "BORROWING-NODE", "BLOCK", "BLOCK OWNER", "TYPE", "ALLOCATED-TO"], rows)
    if unclassified:
        out += (f"\nNote: found {unclassified} IP allocations without an explicit node association. "
                "Unable to determine if they are borrowed.\n")
    return out


def configuration_table(ipam) -> str:
    """Calico's ShowConfiguration: each field of its IPAMConfig, in Go syntax."""
    spec = ipam.store.config().spec
    rows = [
        ["StrictAffinity", _go_bool(bool(spec.strict_affinity))],
        ["AutoAllocateBlocks", _go_bool(bool(spec.auto_allocate_blocks))],
        ["MaxBlocksPerHost", str(spec.max_blocks_per_host or 0)],
        ["IPCooldownSeconds", str(spec.ip_cooldown_seconds or 0)],
    ]
    return render_table(["PROPERTY", "VALUE"], rows)


def _go_bool(value: bool) -> str:
    return "true" if value else "false"


# --- check -------------------------------------------------------------------------------------


@dataclass
class Allocation:
    """One allocated ordinal, cross-referenced with what uses its address (Calico's
    ``ipam.Allocation``)."""

    ip: str
    handle: str = ""
    sequence_number: int = 0
    pod: str = ""
    namespace: str = ""
    node: str = ""
    type: str = ""
    creation_timestamp: str = ""
    in_use: bool = False
    borrowed: bool = False
    cooling_down: bool = False
    owners: list[str] = field(default_factory=list)
    attrs_text: str = "<missing>"

    def to_json(self) -> dict:
        doc: dict[str, Any] = {"ip": self.ip}
        if self.handle:
            doc["handle"] = self.handle
        doc["sequenceNumber"] = self.sequence_number
        for key, value in (("pod", self.pod), ("namespace", self.namespace), ("node", self.node),
                           ("type", self.type), ("creationTimestamp", self.creation_timestamp)):
            if value:
                doc[key] = value
        doc["inUse"] = self.in_use
        if self.borrowed:
            doc["borrowed"] = True
        if self.cooling_down:
            doc["coolingDown"] = True
        doc["owners"] = list(self.owners) or None  # Go marshals a nil slice as null
        return doc


@dataclass
class HandleInfo:
    id: str
    uid: str | None
    revision: str

    def to_json(self) -> dict:
        return {"ID": self.id, "UID": self.uid, "Revision": self.revision}


def _format_attrs(a) -> str:
    """Calico's formatAttrs: ``Main:<handle> Extra:k=v,k=v``."""
    if a is None:
        return "<missing>"
    extra = a.secondary or {}
    return f"Main:{a.handle if a.handle is not None else '<none>'} Extra:" + ",".join(
        f"{k}={extra[k]}" for k in sorted(extra))


def _normalise(text: str) -> str:
    """Calico's normaliseIP: the address of an address or CIDR."""
    return str(ipaddress.ip_interface(text.strip()).ip)


def _ip_key(text: str):
    addr = ipaddress.ip_address(text)
    return addr.version, addr


class IPAMCheck:
    """Calico's IPAMChecker on the Datastore; ``run`` prints as Calico does."""

    def __init__(self, datastore, ipam, show_all: bool, show_problems: bool, out):
        self.ds, self.ipam = datastore, ipam
        self.show_all, self.show_problems = show_all, show_problems or show_all
        self.out = out
        self.allocations: dict[str, list[Allocation]] = {}
        self.by_node: dict[str, list[Allocation]] = {}
        self.in_use: dict[str, list[str]] = {}
        self.in_use_handles: set[str] = set()
        self.leaked_handles: list[HandleInfo] = []
        self.inconsistencies: list = []
        self.cluster: dict[str, Any] = {}

    def say(self, text: str = "") -> None:
        self.out(text + "\n")

    def run(self) -> int:
        """Every step of Calico's checkIPAM; returns the number of problems."""
        from pycalico.core.datastore import NotFound
        from pycalico.plugins.ipam.calico_ipam import pools as pool_math

        self.say("Checking IPAM for inconsistencies...")
        self.say()
        try:
            info = self.ds.get("ClusterInformation", "default")
        except NotFound as exc:
            raise _not_found(exc, "ClusterInformation", "default") from None
        self.cluster = {
            "guid": info.spec.cluster_guid or "",
            "type": info.spec.cluster_type or "",
            "revision": info.metadata.resource_version or "",
            "locked": info.spec.datastore_ready is False,
        }

        self.say("Loading all IPAM blocks...")
        blocks = sorted(self.ipam.store.blocks(), key=lambda b: (b.network.version, b.network))
        self.say(f"Found {len(blocks)} IPAM blocks.")
        count = 0
        for b in blocks:
            self.say(f" IPAM block {b.cidr} affinity={b.affinity or '<none>'}:")
            for ordinal, index in enumerate(b.allocations):
                if index is None:
                    continue
                count += 1
                self._record_allocation(b, ordinal)
        self.say(f"IPAM blocks record {count} allocations.")
        self.say()

        self.say("Loading all IPAM pools...")
        active = []
        for pool in self.ipam.store.pools():
            if pool.spec.disabled:
                continue
            self.say(f"  {pool.spec.cidr}")
            active.append(pool_math.network(pool))
        self.say(f"Found {len(active)} active IP pools.")
        self.say()

        self.say("Loading all nodes.")
        node_ips = 0
        for node in _list_all(self.ds, "Node"):
            for ip in self._node_ips(node):
                self._record_in_use(ip, f"Node({node.metadata.name})")
                node_ips += 1
        self.say(f"Found {node_ips} node tunnel IPs.")
        self.say()

        self.say("Loading all workload endpoints.")
        wep_ips = 0
        for wep in _list_all(self.ds, "WorkloadEndpoint"):
            for text in wep.spec.ip_networks or ():
                try:
                    ip = _normalise(text)
                except ValueError as exc:
                    raise Failure(f"failed to parse IP ({text}) of workload {wep.metadata.namespace}/"
                                  f"{wep.metadata.name}: {exc}") from None
                self._record_in_use(ip, f"Workload({wep.metadata.namespace}/{wep.metadata.name})")
                wep_ips += 1
        self.say(f"Found {wep_ips} workload IPs.")
        self.say(f"Workloads and nodes are using {len(self.in_use)} IPs.")
        self.say()

        self.say("Loading all handles")
        handles: dict[str, HandleInfo] = {}
        for h in self.ipam.store.handles():
            handle_id = h.spec.handle_id or h.metadata.name
            handles[handle_id] = HandleInfo(handle_id, h.metadata.uid, h.metadata.resource_version or "")

        shown = 20
        self.say(f"Looking for top (up to {shown}) nodes by allocations...")
        nodes = sorted(self.by_node, key=lambda n: (-len(self.by_node[n]), n))
        for n in nodes[:shown]:
            self.say(f"  {n} has {len(self.by_node[n])} allocations")
        if nodes:
            most, median = len(self.by_node[nodes[0]]), len(self.by_node[nodes[len(nodes) // 2]])
            self.say(f"Node with most allocations has {most}; median is {median}")
        self.say()

        problems = 0
        self.say("Scanning for IPs that are allocated but not actually in use...")
        leaked = []
        for ip in sorted(self.allocations, key=_ip_key):
            allocs = self.allocations[ip]
            if ip in self.in_use or all(a.cooling_down for a in allocs):
                continue
            if self.show_problems:
                for a in allocs:
                    self.say(f"  {ip} leaked; attrs {a.attrs_text}")
            leaked.append(ip)
        problems += len(leaked)
        self.say(f"Found {len(leaked)} IPs that are allocated in IPAM but not actually in use.")

        self.say("Scanning for IPs that are in use by a workload or node but not allocated in IPAM...")
        not_calico, not_allocated = [], []
        for ip in sorted(self.in_use, key=_ip_key):
            owners = self.in_use[ip]
            if self.show_problems and len(owners) > 1:
                self.say(f"  {ip} has multiple owners.")
            if ip in self.allocations:
                continue
            addr = ipaddress.ip_address(ip)
            if not any(addr.version == net.version and addr in net for net in active):
                if self.show_problems:
                    for owner in owners:
                        self.say(f"  {ip} in use by {owner} is not in any active IP pool.")
                not_calico.append(ip)
                continue
            if self.show_problems:
                for owner in owners:
                    self.say(f"  {ip} in use by {owner} and in active IPAM pool but has no IPAM allocation.")
            not_allocated.append(ip)
        problems += len(not_calico) + len(not_allocated)
        self.say(f"Found {len(not_calico)} in-use IPs that are not in active IP pools.")
        self.say(f"Found {len(not_allocated)} in-use IPs that are in active IP pools but have no "
                 "corresponding IPAM allocation.")
        self.say()

        self.say("Scanning for IPAM handles with no matching IPs...")
        good = 0
        for handle_id in sorted(handles):
            if handle_id in self.in_use_handles:
                good += 1
                continue
            if self.show_all:
                self.say(f"  {handle_id} doesn't have any active IPs.")
            problems += 1
            self.leaked_handles.append(handles[handle_id])
        self.say(f"Found {len(self.leaked_handles)} handles with no matching IPs (and {good} handles with matches).")

        self.say("Scanning for IPs with missing handle...")
        missing = sorted(self.in_use_handles - set(handles))
        if self.show_problems:
            for handle_id in missing:
                self.say(f"  {handle_id} is in use in a block but doesn't exist.")
        self.say(f"Found {len(missing)} handles mentioned in blocks with no matching handle resource.")

        self.say("Scanning IPAM blocks, affinities and handle counts for inconsistencies...")
        leaked_ids = {h.id for h in self.leaked_handles}
        found = self.ipam.check()
        self.inconsistencies = [p for p in found.problems if p.kind in INCONSISTENCIES
                                and not (p.kind == "handle-count" and p.subject in leaked_ids)]
        if self.show_problems:
            for p in self.inconsistencies:
                self.say(f"  {p}")
        problems += len(self.inconsistencies)
        self.say(f"Found {len(self.inconsistencies)} inconsistencies in IPAM blocks, affinities and handles.")

        self.say(f"Check complete; found {problems} problems.")
        return problems

    def _record_allocation(self, b, ordinal: int) -> None:
        ip = str(b.ip(ordinal))
        alloc = Allocation(ip=ip)
        affine = b.host or ""
        node = affine
        a = b.attribute(ordinal)
        in_use_as = None
        if a is not None:
            alloc.attrs_text = _format_attrs(a)
            attrs = a.secondary or {}
            if a.released_at is not None:
                alloc.cooling_down = True
            elif a.handle is not None and a.handle.lower() == WINDOWS_RESERVED_HANDLE:
                in_use_as = "Reserved for Windows"
                self.in_use_handles.add(a.handle)
            elif a.handle is not None:
                alloc.handle = a.handle
                self.in_use_handles.add(a.handle)
            node = attrs.get("node") or node
            alloc.pod, alloc.namespace = attrs.get("pod", ""), attrs.get("namespace", "")
            alloc.type, alloc.creation_timestamp = attrs.get("type", ""), attrs.get("timestamp", "")
            if alloc.type and alloc.type not in TUNNEL_TYPES and in_use_as is None and not alloc.cooling_down:
                in_use_as = f"UnknownType({alloc.type})"  # nothing here knows what holds it
        alloc.sequence_number = b.sequence_for.get(str(ordinal), 0)
        alloc.node = node
        alloc.borrowed = node != affine
        self.allocations.setdefault(ip, []).append(alloc)
        self.by_node.setdefault(node, []).append(alloc)
        if self.show_all:
            self.say(f"  {ip} allocated; attrs {alloc.attrs_text}")
        if in_use_as is not None:
            self._record_in_use(ip, in_use_as)

    def _record_in_use(self, ip: str, owner: str) -> None:
        if self.show_all:
            self.say(f"  {ip} belongs to {owner}")
        self.in_use.setdefault(ip, []).append(owner)
        for a in self.allocations.get(ip, ()):
            if a.cooling_down:
                continue
            a.in_use = True
            a.owners.append(owner)

    @staticmethod
    def _node_ips(node) -> list[str]:
        spec = node.spec
        fields = [
            ("IPv4VXLANTunnelAddr", spec.ipv4_vxlan_tunnel_addr),
            ("Wireguard.InterfaceIPv4Address", spec.wireguard.interface_ipv4_address if spec.wireguard else None),
            ("IPv4IPIPTunnelAddr", spec.bgp.ipv4_ipip_tunnel_addr if spec.bgp else None),
            ("IPv6VXLANTunnelAddr", spec.ipv6_vxlan_tunnel_addr),
            ("Wireguard.InterfaceIPv6Address", spec.wireguard.interface_ipv6_address if spec.wireguard else None),
        ]
        out = []
        for name, value in fields:
            if not value:
                continue
            try:
                out.append(_normalise(value))
            except ValueError as exc:
                raise Failure(f"failed to parse {name} ({value}) of node {node.metadata.name}: {exc}") from None
        return out

    def report(self) -> dict:
        from pycalico.core.ctl.version import client_version

        doc = {
            "version": client_version(),
            "clusterGUID": self.cluster["guid"],
            "datastoreLocked": self.cluster["locked"],
            "clusterInformationRevision": self.cluster["revision"],
            "clusterType": self.cluster["type"],
            "allocations": {ip: [a.to_json() for a in allocs] for ip, allocs in sorted(self.allocations.items())},
        }
        if self.leaked_handles:
            doc["leakedHandles"] = [h.to_json() for h in self.leaked_handles]
        if self.inconsistencies:
            doc["inconsistencies"] = [{"kind": p.kind, "subject": p.subject, "detail": p.detail}
                                      for p in self.inconsistencies]
        return doc


def _list_all(datastore, kind: str) -> list:
    """Every ``kind`` resource (all namespaces), page by page."""
    items: list = []
    token = None
    while True:
        page = datastore.list(kind, limit=500, continue_token=token) if token else datastore.list(kind, limit=500)
        items.extend(page.items)
        token = page.continue_token
        if not token:
            return items


def _go_json(doc: Any) -> str:
    """``json.MarshalIndent(doc, "", "  ")``: no trailing newline, HTML characters escaped."""
    text = json.dumps(doc, indent=2, ensure_ascii=False)
    for char, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
        text = text.replace(char, escaped)
    return text


def _check(ctx: Context, values: dict, datastore) -> int:
    checker = IPAMCheck(datastore, _ipam(datastore), bool(values["show-all-ips"]),
                        bool(values["show-problem-ips"]), ctx.out)
    checker.run()
    if values["output"]:
        path = values["output"]
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o777)  # Go's os.WriteFile(..., 0777)
            with os.fdopen(fd, "w") as f:
                f.write(_go_json(checker.report()))
        except OSError as exc:  # Calico ignores this error; an operator would rather know
            raise Failure(f"open {path}: {(exc.strerror or str(exc)).lower()}") from None
    return 0


# --- release -----------------------------------------------------------------------------------


def _release(ctx: Context, values: dict, datastore) -> int:
    from pycalico.plugins.ipam.calico_ipam import StaleRelease

    ipam = _ipam(datastore)
    if values["from-report"]:
        release_from_reports(ctx, datastore, ipam, bool(values["force"]), values["from-report"])
        ctx.out("You may now unlock the data store.\n")
        return 0
    if values["ip"] is not None:
        ip = _validate_ip(values["ip"])
        try:
            not_assigned = ipam.release_ips([str(ip)])
        except StaleRelease as exc:
            raise Failure(f"error: {exc}") from None
        if not_assigned:
            raise Failure(f"IP address {ip} is not assigned")
        ctx.out(f"Successfully released IP address {ip}\n")
    return 0


def _load_report(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise Failure(f"open {path}: no such file or directory") from None
    except OSError as exc:
        raise Failure(f"open {path}: {exc.strerror.lower() if exc.strerror else exc}") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise Failure(f"{path}: invalid report: {exc}") from None
    if not isinstance(doc, dict):
        raise Failure(f"{path}: invalid report: not a JSON object")
    return doc


def release_from_reports(ctx: Context, datastore, ipam, force: bool, paths: list[str]) -> None:
    """Calico's ReleaseFromReports."""
    from pycalico.core.ctl.version import client_version
    from pycalico.core.datastore import NotFound

    try:
        info = datastore.get("ClusterInformation", "default")
    except NotFound as exc:
        raise _not_found(exc, "ClusterInformation", "default") from None
    version = client_version()
    current = False
    reports = []
    for path in paths:
        report = _load_report(path)
        if (info.spec.cluster_guid or "") != report.get("clusterGUID", ""):
            # Not overridable with --force: critical.
            raise Failure(f"cluster does not match the provided report ({path}): mismatched cluster GUID. "
                          "Refusing to release")
        if report.get("version", "") != version:
            if not force:
                raise Failure(f"the provided report ({path}) was produced using a different version "
                              f"({report.get('version', '')}) of calicoctl. Refusing to release")
            ctx.out("WARNING: Report was produced using a different version of calicoctl. "
                    "Ignoring due to --force option\n")
        if (info.metadata.resource_version or "") == report.get("clusterInformationRevision", ""):
            current = True
        reports.append(report)
    if not current:
        raise Failure("the provided reports are all stale - at least one should be up-to-date. Please generate a "
                      "new report while the data store is locked and try again")
    if info.spec.datastore_ready is None or info.spec.datastore_ready:
        if not force:
            raise Failure("data store is not locked. Either lock the data store, or re-run with --force")
        ctx.out("WARNING: Data store is not locked. Ignoring due to --force option\n")

    ips, handles, inconsistencies = merge_reports(reports)
    if ips:
        _release_ips(ctx, ipam, ips)
    else:
        ctx.out("Report didn't contain any leaked IPs to clean up.\n")
    if handles:
        _release_handles(ctx, ipam, handles)
    else:
        ctx.out("Report didn't contain any handles to clean up.\n")
    if inconsistencies:
        _repair(ctx, ipam, inconsistencies)


def merge_reports(reports: list[dict]) -> tuple[dict, dict, set]:
    """What every report calls leaked: addresses (with the handle and sequence number of
    the latest report), handles (only those at the same revision in every report), and
    pycalico's inconsistencies (kind, subject)."""
    from pycalico.plugins.ipam.calico_ipam import ReleaseOptions

    ips: dict[str, Any] | None = None
    handles: dict[str, dict] | None = None
    problems: set | None = None
    for report in reports:
        merged: dict[str, Any] = {}
        for allocs in (report.get("allocations") or {}).values():
            for a in allocs or ():
                if a.get("inUse") or a.get("coolingDown"):
                    continue
                ip = a.get("ip", "")
                if ips is not None and ip not in ips:
                    continue
                merged[ip] = ReleaseOptions(ip, a.get("handle") or None, a.get("sequenceNumber"))
        ips = merged
        merged_handles = {}
        for h in report.get("leakedHandles") or ():
            old = handles.get(h.get("ID")) if handles is not None else None
            if handles is None or (old is not None and old.get("Revision") == h.get("Revision")):
                merged_handles[h.get("ID")] = h
        handles = merged_handles
        found = {(p.get("kind"), p.get("subject")) for p in report.get("inconsistencies") or ()}
        problems = found if problems is None else problems & found
    return ips or {}, handles or {}, problems or set()


def _release_ips(ctx: Context, ipam, ips: dict) -> None:
    from pycalico.plugins.ipam.calico_ipam import IPAMError

    ctx.out(f"Releasing {len(ips)} old IPs...\n")
    not_assigned: list = []
    try:
        not_assigned = ipam.release_ips(list(ips.values()))
    except IPAMError as exc:
        ctx.out(f"An error occurred while releasing some IPs: {exc}.  Problems are often caused by an out-of-date "
                "IPAM report.  Try regenerating the IPAM report and retry.\n")
    else:
        ctx.out(f"Released {len(ips) - len(not_assigned)} IPs successfully\n")
    if not_assigned:
        ctx.out(f"{len(not_assigned)} addresses marked as leaked in the report had already been cleaned up.\n")


def _release_handles(ctx: Context, ipam, handles: dict) -> None:
    """Delete each handle only if it is still at the revision (and UID) the report saw."""
    from pycalico.core.datastore import Conflict, DatastoreError, NotFound
    from pycalico.core.resources.ipam import IPAMHandle

    ctx.out(f"Deleting {len(handles)} handles...\n")
    ctx.out("Key: '.' = Deleted OK; 'x' = skip, handle missing/changed.\n")
    released = skipped = errors = 0
    for handle_id in sorted(handles):
        seen = handles[handle_id]
        try:
            h = ipam.store.handle(handle_id)
            if h is None:
                raise NotFound(IPAMHandle.KIND, handle_id)
            if (h.metadata.resource_version or "") != seen.get("Revision") or h.metadata.uid != seen.get("UID"):
                raise Conflict(IPAMHandle.KIND, handle_id, detail="IPAM handle revision or UID didn't match")
            ipam.datastore.delete(IPAMHandle.KIND, h.metadata.name, resource_version=h.metadata.resource_version)
        except (NotFound, Conflict):
            skipped += 1
            ctx.out("x")
        except DatastoreError as exc:
            errors += 1
            ctx.out(f"\nDeleting handle {handle_id} failed: {exc}.\n")
        else:
            released += 1
            ctx.out(".")
    ctx.out("\n")
    ctx.out(f"Released {released} handles; {skipped} skipped; {errors} errors.\n")


def _repair(ctx: Context, ipam, wanted: set) -> None:
    """Repair the reports' inconsistencies that a check now still finds."""
    from pycalico.plugins.ipam.calico_ipam import Report

    now = ipam.check()
    still = [p for p in now.problems if (p.kind, p.subject) in wanted]
    ctx.out(f"Repairing {len(wanted)} IPAM inconsistencies...\n")
    lines = ipam.repair(Report(problems=still)) if still else []
    for line in lines:
        ctx.out(f"  {line}\n")
    ctx.out(f"Repaired {len(still)} inconsistencies; {len(wanted) - len(still)} no longer found.\n")


# --- configure ---------------------------------------------------------------------------------


def _parse_go_bool(text: str) -> bool:
    """Go's strconv.ParseBool."""
    if text in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if text in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    raise ValueError(text)


def _configure(ctx: Context, values: dict, datastore) -> int:
    import attrs

    from pycalico.core.datastore import NotFound
    from pycalico.core.resources.base import deferred_checks, problems
    from pycalico.core.resources.ipam import IPAMConfig

    strict = None
    if values["strictaffinity"]:
        try:
            strict = _parse_go_bool(values["strictaffinity"])
        except ValueError:
            raise Failure("invalid value. Use true or false to set strictaffinity") from None
    max_blocks = None
    if values["max-blocks-per-host"]:
        try:
            max_blocks = int(values["max-blocks-per-host"], 10)
            if not -2**31 <= max_blocks < 2**31:
                raise ValueError
        except ValueError:
            raise Failure("invalid value for maxblockhost. Use a valid number") from None
    persistence = None
    if values["kubevirt-ip-persistence"]:
        persistence = values["kubevirt-ip-persistence"]
        if persistence not in ("Enabled", "Disabled"):
            raise Failure("invalid value for --kubevirt-ip-persistence. Use Enabled or Disabled")
    cooldown = None
    if values["ip-cooldown-seconds"] not in (None, "", "-1"):
        try:
            cooldown = int(values["ip-cooldown-seconds"], 10)
        except ValueError:
            raise Failure("invalid value for ip-cooldown-seconds. Use a valid number") from None
    if strict is None and max_blocks is None and persistence is None and cooldown is None:
        raise Failure("at least one configuration option must be specified")

    try:
        stored = datastore.get(IPAMConfig.KIND, "default")
    except NotFound:
        stored = None
    current = stored or IPAMConfig.default()
    changes = {}
    if strict is not None:
        changes["strict_affinity"] = strict
    if max_blocks is not None:
        changes["max_blocks_per_host"] = max_blocks
    if persistence is not None:
        changes["kube_virt_vm_address_persistence"] = persistence
    if cooldown is not None:
        changes["ip_cooldown_seconds"] = cooldown
    with deferred_checks():
        spec = attrs.evolve(current.spec, **changes)
    # Calico's SetIPAMConfig checks, then the resource's own.
    if not spec.strict_affinity and not spec.auto_allocate_blocks:
        raise Failure("error: Cannot disable 'StrictAffinity' and 'AutoAllocateBlocks' at the same time")
    if (spec.max_blocks_per_host or 0) > 0 and not spec.strict_affinity:
        raise Failure("error: MaxBlocksPerHost requires StrictAffinity to be enabled")
    found = problems(spec, "")
    if found:
        raise Failure("error: " + "; ".join(f"{path}: {message}" for path, message in found))
    if stored is None or spec != stored.spec:
        with deferred_checks():
            config = attrs.evolve(current, spec=spec)
        if stored is None:
            datastore.create(config)
        else:
            datastore.update(config)  # compare-and-swap on the version just read
    if strict is not None:
        ctx.out(f"Successfully set StrictAffinity to: {_go_bool(strict)}\n")
    if max_blocks is not None:
        ctx.out(f"Successfully set MaxBlocksPerHost to: {max_blocks}\n")
    if persistence is not None:
        ctx.out(f"Successfully set KubeVirtVMAddressPersistence to: {persistence}\n")
    if cooldown is not None:
        ctx.out(f"Successfully set IPCooldownSeconds to: {cooldown}\n")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run(["ipam", *sys.argv[1:]], Context()))
