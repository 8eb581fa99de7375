"""``calico-node``: the node agent's command line.

Besides running the agent, it answers the exec probes Calico's manifests give the
kubelet (``node/pkg/health/health.go``): ``-felix-live`` / ``-felix-ready`` ask the
agent's ``[health]`` listener, ``-bird-live`` asks BIRD's control socket, ``-bird-ready``
asks the routing plugin (``pycalico_readiness``: in bird mode, BGP sessions up). Each
failing check prints one ``calico/node is not ready: ...`` line; the exit status is 1
if any failed. Calico's single-dash spellings are accepted.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from pycalico.core import config as cfg


def default_config_path() -> Path:
    return Path(os.environ.get("CALICO_CONFIG", cfg.DEFAULT_PATH))


def check(path: Path) -> int:
    from pycalico.core.plugins import PluginError, Plugins

    try:
        Plugins.load(cfg.read(path), str(path), configure=False)
    except cfg.ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    except PluginError as exc:
        print(f"{path}: {exc}", file=sys.stderr)
        return 1
    print(f"{path}: ok")
    return 0


def run(path: Path, once: bool) -> int:
    from pycalico.core import logs
    from pycalico.core.loop import Loop
    from pycalico.core.plugins import PluginError

    try:
        loop = Loop(path, own_logging=True, serve=True)
    except (cfg.ConfigError, PluginError) as exc:
        print(exc, file=sys.stderr)
        return 1
    logs.setup(loop.config.logging, "calico-node")
    write_nodename(loop.config)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: loop.stop())
    loop.run(once=once)
    report = loop.last_report
    return 0 if report is None or report.ok else 2


def write_nodename(config: cfg.Config) -> None:
    """This node's name in ``[node] nodename_file``, as Calico's startup writes it for
    the CNI plugin; rewritten only when it differs."""
    path = config.node.nodename_file
    if not path:
        return
    target = Path(path)
    try:
        if target.read_text() == config.hostname:
            return
    except OSError:
        pass
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text(config.hostname)
    os.replace(tmp, target)


PROBES = ("felix_live", "felix_ready", "bird_live", "bird_ready")
PROBE_TABLES = ("node_name", "health", "routing")


def probe(path: Path, checks: list[str]) -> int:
    """Run the named probe checks against the agent that runs ``path``."""
    from pycalico.core import health
    from pycalico.core.plugins import PluginError, Plugins

    try:
        plugins = Plugins.load(cfg.read(path), str(path), configure=False, slots=("routing",))
    except (cfg.ConfigError, PluginError):
        # The agent refused this file and runs its last good one: the probes need only
        # where to ask, so they read just those tables.
        try:
            only = cfg.parse(path.read_text(), str(path), only=PROBE_TABLES)
            plugins = Plugins.load(only, str(path), configure=False, slots=("routing",))
        except (OSError, cfg.ConfigError, PluginError) as exc:
            print(f"calico/node check error: {exc}")
            return 1
    failures = []
    for check in checks:
        if check in ("felix_live", "felix_ready"):
            kind = check.split("_")[1]
            why = health.probe(plugins.config.health, "/liveness" if kind == "live" else "/readiness")
            if why:
                failures.append(f"Felix is not {kind}: {why}" if kind == "live" else f"felix is not ready: {why}")
        elif check == "bird_live":
            why = _bird_liveness(plugins.config)
            if why:
                failures.append(f"bird is not live: {why}")
        else:
            reasons = plugins.readiness("routing")
            if reasons:
                failures.append("; ".join(reasons))
    for failure in failures:
        print(f"calico/node is not ready: {failure}")
    return 1 if failures else 0


def status(path: Path) -> int:
    """``calico-node --status``: what the agent running ``path`` serves on ``/status``."""
    from pycalico.core import health

    try:
        code, body = health.get(cfg.parse(path.read_text(), str(path), only=PROBE_TABLES).health, "/status")
    except (OSError, cfg.ConfigError) as exc:
        print(f"calico-node is not answering: {exc}")
        return 1
    print(body)
    return 0 if code == 200 else 1


def _bird_liveness(config: cfg.Config) -> str | None:
    if config.routing.type != "bird":
        return f"routing is {config.routing.type!r}, BIRD does not run"
    from pycalico.plugins.routing.bird import control

    try:
        reply = control.command(config.routing.options.socket, "show status")
    except control.BirdError as exc:
        return str(exc)
    return None if not reply.failed and reply.text.startswith("BIRD") else f"bad response from bird: {reply.text}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="calico-node", description="pycalico's node agent")
    parser.add_argument("--config", type=Path, default=None, help="calico.toml (default: $CALICO_CONFIG or /etc/calico/calico.toml)")
    parser.add_argument("--check-config", action="store_true", help="validate the config and exit (0 ok, 1 errors)")
    parser.add_argument("--once", action="store_true", help="sync, run one reconcile pass and exit")
    for name, text in (("felix-live", "the agent's /liveness"), ("felix-ready", "the agent's /readiness"),
                       ("bird-live", "BIRD answers on its socket"), ("bird-ready", "the routing plugin's readiness")):
        parser.add_argument(f"-{name}", f"--{name}", action="store_true", help=f"probe: {text}; exit 0 when good")
    parser.add_argument("--status", action="store_true",
                        help="print the running agent's readiness and its plugins' status lines; exit 0 when ready")
    args = parser.parse_args(argv)
    path = args.config or default_config_path()
    if args.check_config:
        return check(path)
    if args.status:
        return status(path)
    checks = [name for name in PROBES if getattr(args, name)]
    if checks:
        return probe(path, checks)
    return run(path, args.once)


if __name__ == "__main__":
    sys.exit(main())
