"""The ``calico`` and ``calico-ipam`` executables (one entry point, dispatched on
argv[0] as Calico's ``cmd/calico`` does).

A runtime runs the executable once per pod, so its start-up is most of its latency. The
fast path therefore imports nothing but the ``_socket`` C module (os and sys are loaded
with the interpreter; not even json, which would pull in ``re``): it sends the request
(the environment and the netconf, as bytes) to the node agent's unix socket and copies
the agent's answer to stdout. When no agent listens there (no socket file, connection
refused, or the agent went away before answering) the request is served in this
process by ``handler`` (pyroute2, the datastore plugin and IPAM cost a few hundred
milliseconds to import). Both run the same code; every command is idempotent, so a
request whose agent died half way is simply served again here.

Socket path: ``$CALICO_CNI_SOCKET`` if set, else the netconf's ``socket_path``, else
``/var/run/calico/cni.sock``; an empty value turns the fast path off.

Wire format (both directions end with the sender closing its side)::

    request: b"PYCALICO-CNI 1 <plugin> <n>\\n" + <n bytes: KEY=VALUE entries joined by NUL> + <netconf>
    reply:   b"<exit code> <n>\\n" + <n bytes: stdout> + <stderr>

Flags (Calico's): ``-v`` prints the version, ``-t`` tests the datastore connection.
"""

import os
import sys

DEFAULT_SOCKET = "/var/run/calico/cni.sock"
VERSION = "pycalico 0.1.0"
MAGIC = b"PYCALICO-CNI"
PROTOCOL = b"1"
AGENT_TIMEOUT = 300.0  # IPAM may wait 90 s for its lock; the runtime has its own timeout
_KEY = b'"socket_path"'


def _plugin(argv0: str) -> str:
    return "calico-ipam" if os.path.basename(argv0).endswith("ipam") else "calico"


def _json_string(data: bytes, i: int):
    """The JSON string value after ``"key"`` ending at ``i`` (``: "..."``), or
    ``...`` when it is not a plain string this scanner reads (the caller then parses
    the whole netconf)."""
    n = len(data)
    while i < n and data[i] in b" \t\r\n":
        i += 1
    if i >= n or data[i] != 0x3A:  # ':'
        return ...
    i += 1
    while i < n and data[i] in b" \t\r\n":
        i += 1
    if i >= n or data[i] != 0x22:  # '"'
        return ...
    end = data.find(b'"', i + 1)
    value = data[i + 1:end]
    if end < 0 or b"\\" in value:
        return ...
    return value.decode("utf-8", "replace")


def socket_path(env, stdin: bytes):
    """Where the agent listens, or None for no fast path. The netconf's
    ``socket_path`` is found without a JSON parser when it is a plain string."""
    if "CALICO_CNI_SOCKET" in env:
        return env["CALICO_CNI_SOCKET"] or None
    at = stdin.find(_KEY)
    if at < 0:
        return DEFAULT_SOCKET
    value = _json_string(stdin, at + len(_KEY)) if stdin.find(_KEY, at + 1) < 0 else ...
    if value is ...:
        import json

        try:
            conf = json.loads(stdin)
        except ValueError:
            return None  # the in-process path reports the bad JSON
        value = conf.get("socket_path", DEFAULT_SOCKET) if isinstance(conf, dict) else None
    return value if isinstance(value, str) and value else None


def unix_path(path: str):
    """``path`` as a socket address: a path too long for sockaddr_un (108 bytes) is
    reached through its directory's descriptor. Returns (address, fd to close or None)."""
    if len(path.encode()) < 100:
        return path, None
    directory, base = os.path.split(path)
    fd = os.open(directory or ".", os.O_PATH | os.O_CLOEXEC)
    return f"/proc/self/fd/{fd}/{base}", fd


def encode_request(plugin: str, environ: dict, stdin: bytes) -> bytes:
    block = b"\0".join(k + b"=" + v for k, v in environ.items())
    return b"%s %s %s %d\n" % (MAGIC, PROTOCOL, plugin.encode(), len(block)) + block + stdin


def decode_request(data: bytes) -> tuple[str, dict, bytes]:
    """(plugin, environment, stdin) of a request; ValueError if it is not one."""
    head, sep, rest = data.partition(b"\n")
    parts = head.split(b" ")
    if not sep or len(parts) != 4 or parts[0] != MAGIC or parts[1] != PROTOCOL:
        raise ValueError("not a PYCALICO-CNI 1 request")
    size = int(parts[3])
    env = {}
    for item in rest[:size].split(b"\0") if size else ():
        key, _, value = item.partition(b"=")
        env[key.decode("utf-8", "surrogateescape")] = value.decode("utf-8", "surrogateescape")
    return parts[2].decode(), env, rest[size:]


def encode_reply(code: int, stdout: str, stderr: str) -> bytes:
    out = stdout.encode()
    return b"%d %d\n" % (code, len(out)) + out + stderr.encode()


def ask_agent(path: str, plugin: str, environ: dict, stdin: bytes, timeout: float = AGENT_TIMEOUT):
    """The agent's reply as (code, stdout bytes, stderr bytes), or None if no agent
    answered."""
    import _socket

    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        try:
            address, fd = unix_path(path)
            try:
                sock.connect(address)
            finally:
                if fd is not None:
                    os.close(fd)
        except (FileNotFoundError, ConnectionRefusedError, NotADirectoryError, PermissionError):
            return None
        sock.sendall(encode_request(plugin, environ, stdin))
        sock.shutdown(_socket.SHUT_WR)
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    except OSError:
        return None
    finally:
        sock.close()
    data = b"".join(chunks)
    head, sep, rest = data.partition(b"\n")
    try:
        code, size = (int(x) for x in head.split(b" "))
    except ValueError:
        return None  # the agent went away before answering
    if not sep or len(rest) < size:
        return None
    return code, rest[:size], rest[size:]


def _flags(args) -> int | None:
    if not args:
        return None
    if args[0] in ("-v", "--version"):
        print(VERSION)
        return 0
    if args[0] == "-t":
        from pycalico.core.cni.handler import Handler

        handler = Handler()
        try:
            reply = handler.test_connection(sys.stdin.buffer.read())
        finally:
            handler.close()
        sys.stdout.write(reply.stdout)
        return reply.code
    sys.stdout.write('{"cniVersion": "1.0.0", "code": 100, "msg": "failed to parse CLI flags", '
                     f'"details": "unknown flag {args[0]!r} (only -v and -t)"}}\n')
    return 1


def main() -> int:
    plugin = _plugin(sys.argv[0])
    code = _flags(sys.argv[1:])
    if code is not None:
        return code
    stdin = sys.stdin.buffer.read()
    command = os.environ.get("CNI_COMMAND")
    if command == "VERSION":  # answered here: nothing to look up
        import json

        from pycalico.core.cni import spec

        try:
            asked = json.loads(stdin or b"{}").get("cniVersion")
        except (ValueError, AttributeError):
            asked = None
        sys.stdout.write(spec.dumps(spec.version_reply(asked if isinstance(asked, str) else "")))
        return 0
    reply = None
    if command:
        path = socket_path(os.environ, stdin)
        if path:
            reply = ask_agent(path, plugin, dict(os.environb), stdin)
    if reply is None:
        from pycalico.core.cni.handler import run_local

        local = run_local(plugin, os.environ, stdin)
        reply = local.code, local.stdout.encode(), local.stderr.encode()
    code, out, err = reply
    if err:
        sys.stderr.buffer.write(err)
        sys.stderr.flush()
    sys.stdout.buffer.write(out)
    sys.stdout.flush()
    return code


if __name__ == "__main__":
    sys.exit(main())
