"""The run context every command gets, and a small docopt-style option parser.

A command is ``run(argv, ctx) -> exit code`` where ``argv[0]`` is the command's name
(as Calico hands ``args`` to each command). ``ctx`` carries the streams, the
environment and how to reach the datastore, so that tests can run commands in-process
against any Datastore.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TextIO


def _open_datastore(path: str | None, env: Mapping[str, str]) -> Any:
    from pycalico.core.client import open_datastore

    return open_datastore(path, env)


@dataclass
class Context:
    stdout: TextIO = field(default_factory=lambda: sys.stdout)
    stderr: TextIO = field(default_factory=lambda: sys.stderr)
    stdin: TextIO = field(default_factory=lambda: sys.stdin)
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    # (config path or None, environment) -> Datastore; raises ConfigError,
    # PluginError or DatastoreUnavailable.
    open_datastore: Callable[[str | None, Mapping[str, str]], Any] = _open_datastore
    sleep: Callable[[float], None] = time.sleep
    allow_version_mismatch: bool = False  # the global flag

    def out(self, text: str) -> None:
        self.stdout.write(text)

    def err(self, text: str) -> None:
        if text:
            self.stdout.flush()  # keep the order of lines when both go to one terminal
            self.stderr.write(text)
            self.stderr.flush()


class UsageError(Exception):
    """The arguments do not fit the command's usage."""


@dataclass(frozen=True)
class Opt:
    long: str  # "--filename"
    short: str = ""  # "-f"
    value: bool = False  # takes a value
    default: Any = None


def parse(opts: list[Opt], argv: list[str]) -> tuple[dict[str, Any], list[str]]:
    """Options (by long name without dashes) and positional arguments.

    Accepts ``--name value``, ``--name=value``, ``-f value``, ``-fvalue``, grouped
    short flags (``-RA``) and ``--`` to end the options. ``help`` is True for -h/--help.
    """
    by_long = {o.long: o for o in opts}
    by_short = {o.short: o for o in opts if o.short}
    values: dict[str, Any] = {o.long[2:]: (o.default if o.value else False) for o in opts}
    values["help"] = False
    positional: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if arg == "--":
            positional += argv[i:]
            break
        if arg in ("-h", "--help"):
            values["help"] = True
        elif arg.startswith("--"):
            name, eq, inline = arg.partition("=")
            opt = by_long.get(name) or _unique_prefix(by_long, name)
            if opt is None:
                raise UsageError(f"unknown option {name}")
            if opt.value:
                if not eq:
                    if i >= len(argv):
                        raise UsageError(f"{name} requires a value")
                    inline = argv[i]
                    i += 1
                values[opt.long[2:]] = inline
            elif eq:
                raise UsageError(f"{name} takes no value")
            else:
                values[opt.long[2:]] = True
        elif arg.startswith("-") and arg != "-":
            j = 1
            while j < len(arg):
                opt = by_short.get("-" + arg[j])
                if opt is None:
                    raise UsageError(f"unknown option -{arg[j]}")
                if opt.value:
                    rest = arg[j + 1 :]
                    if not rest:
                        if i >= len(argv):
                            raise UsageError(f"{opt.short} requires a value")
                        rest = argv[i]
                        i += 1
                    values[opt.long[2:]] = rest
                    break
                values[opt.long[2:]] = True
                j += 1
        else:
            positional.append(arg)
    return values, positional


def _unique_prefix(by_long: dict[str, Opt], name: str) -> Opt | None:
    """docopt accepts an unambiguous prefix of a long option."""
    matches = [o for long, o in by_long.items() if long.startswith(name)]
    return matches[0] if len(matches) == 1 else None


def invalid_option(argv: list[str]) -> str:
    return f"Invalid option: 'calicoctl {' '.join(argv)}'. Use flag '--help' to read about a specific subcommand.\n"


def command_group(argv: list[str], ctx: Any, doc: str, commands: Iterable[str]) -> str | int:
    """The sub-command of ``calicoctl <group> <command> ...`` (``argv[0]`` is the
    group), or the exit code once Calico's answer for a missing or unknown one is
    printed: usage and an error for none or an option, the help for ``-h``, the help
    again (exit 0, Calico's default branch) for a command it does not know."""
    args = argv[1:]
    if not args or (args[0].startswith("-") and args[0] not in ("-h", "--help")):
        ctx.err(usage_section(doc))
        ctx.err(invalid_option(argv))
        return 1
    if args[0] in ("-h", "--help"):
        ctx.out(doc)
        return 0
    if args[0] not in commands:
        ctx.out(doc + "\n")
        return 0
    return args[0]


def usage_section(doc: str) -> str:
    """The ``Usage:`` lines of a command's help."""
    lines = doc.strip("\n").splitlines()
    out = []
    for line in lines:
        if out and not line.strip():
            break
        if out or line.startswith("Usage:"):
            out.append(line)
    return "\n".join(out) + "\n"
