"""BIRD's control socket: the protocol ``birdc`` speaks, and ``show protocols`` parsed.

A reply is a run of lines, each ``DDDD-text`` (more follows), `` text`` (a continuation
with the previous code) or ``DDDD text`` (the last line). Codes 0xxx close a
successful command, 1xxx/2xxx carry table rows and headings, 8xxx and 9xxx are
errors (``doc/reply_codes`` in BIRD's sources).
"""

from __future__ import annotations

import socket
from pathlib import Path

import attrs

TIMEOUT = 2.0  # seconds per line, as calicoctl waits for BIRD
RECONFIGURED = ("0003", "0004", "0005", "0018", "0019")  # done, in progress, queued, confirmed, nothing to do


class BirdError(Exception):
    """BIRD could not be reached, or refused a command."""


class BirdUnreachable(BirdError):
    """Nothing accepts a connection on BIRD's socket: BIRD is not running (yet)."""


@attrs.frozen
class Reply:
    lines: tuple[tuple[str, str], ...]  # (code, text) per line, continuations carry their code

    @property
    def code(self) -> str:
        return self.lines[-1][0] if self.lines else ""

    @property
    def failed(self) -> bool:
        return self.code[:1] in ("8", "9")

    @property
    def text(self) -> str:
        return "\n".join(text for _, text in self.lines)


def command(path: str | Path, cmd: str, timeout: float = TIMEOUT) -> Reply:
    """Send one command to the BIRD listening on ``path``; its whole reply."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            try:
                sock.connect(str(path))
            except OSError as exc:
                raise BirdUnreachable(f"unable to talk to BIRD on {path}: {exc.strerror or exc}") from None
            stream = sock.makefile("rwb")
            hello = _read(stream)
            if hello.code != "0001":
                raise BirdError(f"{path}: unexpected greeting {hello.text!r}")
            stream.write(cmd.encode() + b"\n")
            stream.flush()
            return _read(stream)
    except OSError as exc:
        raise BirdError(f"unable to talk to BIRD on {path}: {exc.strerror or exc}") from None


def _read(stream) -> Reply:
    lines: list[tuple[str, str]] = []
    code = ""
    while True:
        raw = stream.readline()
        if not raw:
            raise BirdError("BIRD closed the connection in the middle of a reply")
        line = raw.decode(errors="replace").rstrip("\n")
        if line[:4].isdigit() and line[4:5] in ("-", " "):
            code = line[:4]
            lines.append((code, line[5:]))
            if line[4] == " ":
                return Reply(tuple(lines))
        elif line.startswith(" ") and code:
            lines.append((code, line[1:]))
        else:
            raise BirdError(f"unexpected output line from BIRD: {line!r}")


def ready(path: str | Path, timeout: float = 0.5) -> bool:
    """Whether a BIRD answers on ``path``."""
    try:
        return not command(path, "show status", timeout).failed
    except BirdError:
        return False


def configure(path: str | Path) -> str:
    """Make BIRD re-read its configuration file; BirdError if it refuses it."""
    reply = command(path, "configure", timeout=30.0)
    if reply.code not in RECONFIGURED:
        raise BirdError(f"BIRD refused the configuration: {reply.text}")
    return reply.text


@attrs.frozen
class Protocol:
    """One row of ``show protocols``; ``details``: the lines ``show protocols all``
    prints under it (``  BGP state:          Established``)."""

    name: str
    proto: str
    table: str
    state: str
    since: str
    info: str
    details: tuple[str, ...] = ()


HEADINGS = ["name", "proto", "table", "state", "since", "info"]


def protocols(path: str | Path, details: bool = False) -> list[Protocol]:
    """The rows of ``show protocols`` (the info column joined back into one string);
    with ``details``, of ``show protocols all``, each with the lines under it."""
    reply = command(path, "show protocols all" if details else "show protocols")
    if reply.failed:
        raise BirdError(reply.text)
    rows: list[tuple[list[str], list[str]]] = []
    below: list[str] | None = None  # the detail lines of the row being read
    for code, text in reply.lines:
        if code == "2002":
            if [h.lower() for h in text.split()] != HEADINGS:
                raise BirdError("unknown BIRD table output format")
        elif code == "1002":
            cols = text.split()
            below = [] if len(cols) >= 5 else None
            if below is not None:
                rows.append((cols, below))
        elif code == "1006" and below is not None and text:
            below.append(text)
    return [Protocol(*cols[:5], info=" ".join(cols[5:]), details=tuple(lines)) for cols, lines in rows]
