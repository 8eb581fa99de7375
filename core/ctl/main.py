"""The ``calicoctl`` executable: global options, then one command.

Commands live in :data:`COMMANDS`, name -> ``"module:function"`` imported only when
the command runs; each is ``function(argv, ctx) -> exit code`` with ``argv[0]`` the
command's name and ``ctx`` a :class:`pycalico.core.ctl.cli.Context`. A command
provided elsewhere (``calicoctl crds`` from the Kubernetes datastore plugin) is added
here by one line, or by an entry point in the ``pycalico.calicoctl`` group of its
package (``crds = "some.module:run"``), looked up only for names not listed here.
"""

from __future__ import annotations

import sys

from pycalico.core.ctl import cli
from pycalico.core.ctl.cli import Context

COMMANDS: dict[str, str] = {
    "create": "pycalico.core.ctl.commands:create",
    "replace": "pycalico.core.ctl.commands:replace",
    "apply": "pycalico.core.ctl.commands:apply",
    "delete": "pycalico.core.ctl.commands:delete",
    "get": "pycalico.core.ctl.commands:get",
    "ipam": "pycalico.core.ctl.ipam:run",
    "node": "pycalico.core.ctl.node:run",
    "version": "pycalico.core.ctl.version:run",
}
ENTRY_POINT_GROUP = "pycalico.calicoctl"

DOC = """\
Usage:
  calicoctl [options] <command> [<args>...]

    create       Create a resource by file, directory or stdin.
    replace      Replace a resource by file, directory or stdin.
    apply        Apply a resource by file, directory or stdin.  This creates a resource
                 if it does not exist, and replaces a resource if it does exist.
    delete       Delete a resource identified by file, directory, stdin or resource type and
                 name.
    get          Get a resource identified by file, directory, stdin or resource type and
                 name.
    ipam         IP address management.
    node         Calico node management.
    version      Display the version of this binary.

Options:
  -h --help                    Show this screen.
  -l --log-level=<level>       Set the log level (one of panic, fatal, error,
                               warn, info, debug) [default: panic]
     --context=<context>       The name of the kubeconfig context to use.
     --allow-version-mismatch  Allow client and cluster versions mismatch.

Description:
  calicoctl manages Calico's resources (network and security policy, IP pools,
  BGP, endpoints) in the datastore named by calico.toml or by Calico's
  environment variables (DATASTORE_TYPE, ETCD_ENDPOINTS, KUBECONFIG).

  See 'calicoctl <command> --help' to read about a specific subcommand.
"""

LOG_LEVELS = {"panic": 50, "fatal": 50, "error": 40, "warn": 30, "warning": 30, "info": 20, "debug": 10}


def _find(name: str):
    """The function of command ``name``, or None."""
    target = COMMANDS.get(name)
    if target is None:
        from importlib.metadata import entry_points

        for ep in entry_points(group=ENTRY_POINT_GROUP, name=name):
            target = ep.value
            break
    if target is None:
        return None
    from importlib import import_module

    module, _, function = target.partition(":")
    return getattr(import_module(module), function)


def main(argv: list[str] | None = None, ctx: Context | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    ctx = ctx or Context()
    # Global options come before the command (docopt's options-first).
    log_level = "panic"
    i = 0
    while i < len(args) and args[i].startswith("-"):
        arg = args[i]
        if arg in ("-h", "--help"):
            ctx.out(DOC)
            return 0
        if arg == "--version":
            ctx.out("Run 'calicoctl version' to see version information.\n")
            return 0
        if arg == "--allow-version-mismatch":
            ctx.allow_version_mismatch = True
        elif arg in ("-l", "--log-level", "--context") and i + 1 < len(args):
            i += 1
            if arg == "--context":
                ctx.env["K8S_CURRENT_CONTEXT"] = args[i]
            else:
                log_level = args[i]
        elif arg.startswith(("--log-level=", "--context=")) or (arg.startswith("-l") and len(arg) > 2):
            value = arg.split("=", 1)[1] if arg.startswith("--") else arg[2:]
            if arg.startswith("--context="):
                ctx.env["K8S_CURRENT_CONTEXT"] = value
            else:
                log_level = value
        else:
            ctx.out(f"Invalid option: '{' '.join(args)}'. Use flag '--help' to read about a specific subcommand.\n")
            return 1
        i += 1
    if i >= len(args):
        ctx.err(cli.usage_section(DOC))
        return 1
    if log_level.lower() not in LOG_LEVELS:
        ctx.out(f"Unknown log level: {log_level}, expected one of: \npanic, fatal, error, warn, info, debug.\n")
        return 1
    if log_level.lower() != "panic":
        import logging

        logging.basicConfig(level=LOG_LEVELS[log_level.lower()], stream=ctx.stderr)
    command = args[i]
    run = _find(command)
    if run is None:
        ctx.err(f'unknown command: "{command}"\n{DOC}\n')
        return 1
    return run(args[i:], ctx)


def entry() -> None:
    """The console script."""
    try:
        code = main()
    except KeyboardInterrupt:
        code = 130
    except BrokenPipeError:  # calicoctl get ... | head
        code = 0
    sys.exit(code)


if __name__ == "__main__":
    entry()
