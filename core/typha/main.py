"""``calico-typha``: the command line of the fan-out proxy.

It reads the same calico.toml as the agents: the ``[datastore]`` slot says where the
datastore is (through its plugin, as for calico-node), ``[typha.server]`` how to
serve, ``[logging]`` how to log.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

from pycalico.core import config as cfg

log = logging.getLogger("pycalico.core.typha")


def main(argv: list[str] | None = None) -> int:
    from pycalico.core import logs
    from pycalico.core.node import check, default_config_path
    from pycalico.core.plugins import PluginError, Plugins
    from pycalico.core.typha.service import Typha

    parser = argparse.ArgumentParser(prog="calico-typha", description="pycalico's Typha: one datastore watch "
                                     "fanned out to the agents")
    parser.add_argument("--config", type=Path, default=None,
                        help="calico.toml (default: $CALICO_CONFIG or /etc/calico/calico.toml)")
    parser.add_argument("--check-config", action="store_true",
                        help="validate the config as calico-node does and exit (0 ok, 1 errors)")
    args = parser.parse_args(argv)
    path = args.config or default_config_path()
    if args.check_config:
        return check(path)
    try:
        plugins = Plugins.load(cfg.read(path), str(path), slots=("datastore",))
    except (cfg.ConfigError, PluginError) as exc:
        print(exc, file=sys.stderr)
        return 1
    logs.setup(plugins.config.logging, "calico-typha")
    service = Typha(plugins.config.typha.server, plugins.datastore)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: service.stop())
    try:
        asyncio.run(service.serve())
    except OSError as exc:
        log.error("cannot serve on port %d: %s", plugins.config.typha.server.port, exc)
        return 1
    finally:
        plugins.unconfigure()
    return 0


if __name__ == "__main__":
    sys.exit(main())
