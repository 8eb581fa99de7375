"""``calico-node``: the node agent's command line."""

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
        loop = Loop(path, own_logging=True)
    except (cfg.ConfigError, PluginError) as exc:
        print(exc, file=sys.stderr)
        return 1
    logs.setup(loop.config.logging, "calico-node")
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: loop.stop())
    loop.run(once=once)
    report = loop.last_report
    return 0 if report is None or report.ok else 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="calico-node", description="pycalico's node agent")
    parser.add_argument("--config", type=Path, default=None, help="calico.toml (default: $CALICO_CONFIG or /etc/calico/calico.toml)")
    parser.add_argument("--check-config", action="store_true", help="validate the config and exit (0 ok, 1 errors)")
    parser.add_argument("--once", action="store_true", help="sync, run one reconcile pass and exit")
    args = parser.parse_args(argv)
    path = args.config or default_config_path()
    if args.check_config:
        return check(path)
    return run(path, args.once)


if __name__ == "__main__":
    sys.exit(main())
