"""``calicoctl version`` (``calicoctl/calicoctl/commands/version.go``): the client's
version and git commit, then the cluster's version and type from ClusterInformation
``default`` (what calico-node writes), optionally polled."""

from __future__ import annotations

import os
import re
from pathlib import Path

from pycalico.core.ctl import cli
from pycalico.core.ctl.cli import Context, Opt

DOC = """\
Usage:
  calicoctl version [--config=<CONFIG>] [--poll=<POLL>] [--allow-version-mismatch]

Options:
  -h --help                    Show this screen.
  -c --config=<CONFIG>         The calico.toml naming the datastore (default: $CALICO_CONFIG,
                               else Calico's environment variables).
     --poll=<POLL>             Poll for changes to the cluster information at this interval
                               (e.g. 1s, 10m, 2h). 0, the default, does not poll.
     --allow-version-mismatch  Accepted for symmetry; version never checks it.

Description:
  Display the version of calicoctl and of the cluster.
"""

OPTIONS = [Opt("--config", "-c", value=True), Opt("--poll", value=True), Opt("--allow-version-mismatch")]


def client_version() -> str:
    """``v`` and this package's version."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return "v" + version("pycalico")
    except PackageNotFoundError:
        return "unknown"


def git_commit() -> str:
    """The commit of the source tree this package runs from (editable installs), else
    "unknown"; read from .git without running git."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        git = parent / ".git"
        if git.is_dir():
            try:
                head = (git / "HEAD").read_text().strip()
                if head.startswith("ref: "):
                    ref = head[5:]
                    path = git / ref
                    if path.exists():
                        head = path.read_text().strip()
                    else:
                        packed = (git / "packed-refs").read_text()
                        head = next(line.split()[0] for line in packed.splitlines() if line.endswith(" " + ref))
                return head[:8] if re.fullmatch(r"[0-9a-f]{40,64}", head) else "unknown"
            except (OSError, StopIteration):
                return "unknown"
    return "unknown"


_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


def parse_duration(text: str) -> float:
    """Go's time.ParseDuration, in seconds: ``1h30m``, ``500ms``, ``0``."""
    sign = -1.0 if text.startswith("-") else 1.0
    body = text.lstrip("+-")
    if body == "0":
        return 0.0
    if not body:
        raise ValueError(text)
    total, pos = 0.0, 0
    for match in _PART.finditer(body):
        if match.start() != pos:
            raise ValueError(text)
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if pos != len(body):
        raise ValueError(text)
    return sign * total


def run(argv: list[str], ctx: Context) -> int:
    try:
        values, positional = cli.parse(OPTIONS, argv[1:])
    except cli.UsageError:
        positional = [None]
    if positional:
        ctx.err(cli.usage_section(DOC))
        ctx.err(cli.invalid_option(argv))
        return 1
    if values["help"]:
        ctx.out(DOC)
        return 0
    poll = 0.0
    if values["poll"]:
        try:
            poll = parse_duration(values["poll"])
        except ValueError:
            ctx.err("Invalid poll duration specified: 0s\n")  # Calico prints the unparsed 0 value
            return 1
    ctx.out(f"Client Version:    {client_version()}\n")
    ctx.out(f"Git commit:        {git_commit()}\n")

    if values["config"] and not os.path.exists(values["config"]):
        ctx.out(f"Error reading config file: {values['config']}\n")
        return 1
    try:
        datastore = ctx.open_datastore(values["config"], ctx.env)
    except Exception as exc:  # config, plugin or connection: one line, never a traceback
        ctx.err("; ".join(str(exc).splitlines()) + "\n")
        return 1
    try:
        return _show(ctx, datastore, poll)
    except KeyboardInterrupt:
        return 130
    finally:
        close = getattr(datastore, "close", None)
        if close:
            close()


def _show(ctx: Context, datastore, poll: float) -> int:
    from pycalico.core.ctl.resources import translate
    from pycalico.core.datastore import DatastoreError

    shown_version = shown_type = ""
    while True:
        error = None
        try:
            info = datastore.get("ClusterInformation", "default")
        except DatastoreError as exc:
            reason = translate(exc, "ClusterInformation", "default", None)
            error = f"Unable to retrieve Cluster Version or Type: {reason}"
            shown_version = shown_type = ""
        else:
            version = info.spec.calico_version or "unknown"
            kind = info.spec.cluster_type or "unknown"
            if version != shown_version:
                ctx.out(f"Cluster Version:   {version}\n")
                shown_version = version
            if kind != shown_type:
                ctx.out(f"Cluster Type:      {kind}\n")
                shown_type = kind
        if not poll:
            if error:
                ctx.err(error + "\n")
                return 1
            return 0
        if error:
            ctx.err(error + "\n")
        if hasattr(ctx.stdout, "flush"):
            ctx.stdout.flush()
        ctx.sleep(poll)

