"""One BIRD process, started in the caller's network namespace and kept running.

BIRD runs as calico-node runs it (``bird -R -s <socket> -d -c <bird.cfg>``, plus a pid
file), in the foreground, watched by a supervisor thread. The thread is created by the
first :meth:`Daemon.start`, so it lives in that caller's network namespace, and so
does every BIRD it starts. It copies BIRD's output into the log, and when BIRD exits
without being asked to, starts it again after a back-off (1 s, doubling to 30 s while
BIRD keeps dying within a minute of its start).

BIRD outlives an agent that dies (SIGKILL, a crash), as in calico-node it outlives
Felix: it leads its own session, and its output goes to a file (``bird.log`` beside the
pid file) rather than to a pipe the dead agent would leave broken. The next agent adopts
it: a BIRD that the pid file names, with our socket on its command line, in our network
namespace and answering on the socket is watched as if this agent had started it, so
restarting the agent costs no BGP session. One there that does not answer is ended and
replaced. :meth:`Daemon.stop` (an orderly shutdown) ends BIRD, adopted or not.
"""

from __future__ import annotations

import collections
import logging
import os
import select
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import BinaryIO

from . import control

log = logging.getLogger(__name__)

BACKOFF_MAX = 30.0
STABLE_SECONDS = 60.0  # a BIRD that ran this long is not crash-looping
START_TIMEOUT = 10.0
ADOPT_TIMEOUT = 2.0  # how long a BIRD left running may take to answer before it is replaced
POLL_SECONDS = 0.2  # how often BIRD's log is read while it runs
LOG_LIMIT = 1 << 20  # bird.log is emptied once read past this size


def is_bird(pid: int, socket: str) -> bool:
    """Whether ``pid`` is a live BIRD serving ``socket`` (not a zombie, not a reused pid)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")  # empty for a zombie
    except OSError:
        return False
    return os.path.basename(argv[0]) == b"bird" and socket.encode() in argv


def _same_netns(pid: int) -> bool:
    try:
        theirs = os.stat(f"/proc/{pid}/ns/net")
        ours = os.stat(f"/proc/self/task/{threading.get_native_id()}/ns/net")
    except OSError:
        return False
    return (theirs.st_dev, theirs.st_ino) == (ours.st_dev, ours.st_ino)


def _pidfd(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except ProcessLookupError:
        return None


def _exited(pidfd: int | None, timeout: float) -> bool:
    """Whether the process behind ``pidfd`` (None: already gone) exits within ``timeout``."""
    if pidfd is None:
        return True
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    return bool(poller.poll(timeout * 1000))


def _wait_exit(pid: int, proc: subprocess.Popen | None, timeout: float) -> bool:
    """Whether BIRD has exited within ``timeout`` (reaped, if it is our child)."""
    if proc is not None and proc.poll() is not None:
        return True
    pidfd = _pidfd(pid)
    try:
        gone = _exited(pidfd, timeout)
    finally:
        if pidfd is not None:
            os.close(pidfd)
    if gone and proc is not None:
        proc.wait()
    return gone


def _end(pid: int, proc: subprocess.Popen | None, timeout: float) -> None:
    """SIGTERM, then SIGKILL if BIRD is still there after ``timeout``."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        if _wait_exit(pid, proc, timeout):
            return


class Daemon:
    def __init__(self, config_file: Path, socket: str, pid_file: Path, log_file: Path, bird: str = "bird"):
        self.config_file = config_file
        self.socket = socket
        self.pid_file = pid_file
        self.log_file = log_file
        self.bird = bird
        self.restarts = 0  # times BIRD was started again after dying
        self.generation = 0  # bumped at every start or adoption: the BIRD running now is another one
        self.adopted = False  # the BIRD running now was left by an earlier agent
        self.output: collections.deque[str] = collections.deque(maxlen=40)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._running: tuple[int, subprocess.Popen | None] | None = None  # pid, and Popen if our child
        self.failure = ""  # why the last start failed (no BIRD executable, ...)

    def argv(self) -> list[str]:
        return [self.bird, "-R", "-s", self.socket, "-d", "-c", str(self.config_file), "-P", str(self.pid_file)]

    @property
    def pid(self) -> int | None:
        running = self._running
        if running is None:
            return None
        pid, proc = running
        alive = proc.poll() is None if proc is not None else is_bird(pid, self.socket)
        return pid if alive else None

    def start(self, timeout: float = START_TIMEOUT) -> int:
        """Have BIRD running and answering on its socket; its pid.

        Starts the supervisor (in the calling thread's network namespace) unless it
        runs; it adopts a BIRD left running by an earlier agent (``adopted`` is then
        true) or starts one. Raises control.BirdError if BIRD does not come up within
        ``timeout``, with what it printed.
        """
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._stop.clear()
                self._thread = threading.Thread(target=self._supervise, name="bird-supervisor", daemon=True)
                self._thread.start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid = self.pid
            if pid is not None and control.ready(self.socket):
                return pid
            if self.failure:
                raise control.BirdError(self.failure)
            time.sleep(0.05)
        tail = "; ".join(list(self.output)[-5:])
        raise control.BirdError(f"BIRD did not answer on {self.socket} within {timeout:.0f} s" + (f": {tail}" if tail else ""))

    def stop(self, timeout: float = 5.0) -> None:
        """End BIRD and its supervisor (routes stay in the kernel: ``persist``)."""
        self._stop.set()
        running = self._running
        if running is not None and self.pid is not None:
            _end(*running, timeout)
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    # -- the supervisor thread ----------------------------------------------------------

    def _supervise(self) -> None:
        delay = 0.0
        while not self._stop.is_set():
            self.failure = ""
            offset = self._log_size()
            started = time.monotonic()
            pid = self._adopt()
            proc = None if pid is not None else self._spawn()
            if proc is not None:
                pid = proc.pid
            if pid is not None:
                self._running = (pid, proc)
                self.generation += 1
                if self._stop.is_set():  # stop() came while this BIRD was on its way
                    _end(pid, proc, 5.0)
                    return
                status = self._watch(pid, proc, offset)
                if self._stop.is_set():
                    return
                self.failure = f"BIRD exited{status}: " + "; ".join(list(self.output)[-3:])
                log.warning("%s; starting it again", self.failure)
                self.restarts += 1
            stable = time.monotonic() - started >= STABLE_SECONDS
            delay = 1.0 if stable or not delay else min(delay * 2, BACKOFF_MAX)
            self._stop.wait(delay)

    def _adopt(self) -> int | None:
        """The pid of a BIRD an earlier agent left on our pid file, socket and network
        namespace, if it answers; one that does not is ended."""
        try:
            pid = int(self.pid_file.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        if not is_bird(pid, self.socket):
            return None  # gone, or the pid was reused by something else
        if _same_netns(pid) and control.ready(self.socket, ADOPT_TIMEOUT):
            self.adopted = True
            log.info("BIRD pid %d, left running by an earlier agent, adopted", pid)
            return pid
        log.warning("ending BIRD pid %d left by an earlier run: it does not answer here on %s", pid, self.socket)
        _end(pid, None, 5.0)
        return None

    def _spawn(self) -> subprocess.Popen | None:
        Path(self.socket).parent.mkdir(parents=True, exist_ok=True)
        try:
            with open(self.log_file, "ab") as out:
                # Its own session: a signal to the agent's process group does not reach it.
                proc = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL, stdout=out,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        except OSError as exc:
            self.failure = f"cannot start {self.bird}: {exc.strerror or exc}"
            log.error("%s", self.failure)
            return None
        self.adopted = False
        log.info("BIRD started (pid %d)", proc.pid)
        return proc

    def _log_size(self) -> int:
        try:
            return self.log_file.stat().st_size
        except OSError:
            return 0

    def _watch(self, pid: int, proc: subprocess.Popen | None, offset: int) -> str:
        """Copy BIRD's output from ``offset`` on into the log until BIRD exits; how it
        exited (`` with status N`` for our child)."""
        pidfd = _pidfd(pid)
        try:
            with open(self.log_file, "a+b") as out:
                out.seek(offset)
                while not _exited(pidfd, POLL_SECONDS):
                    self._copy(out)
                self._copy(out)
        finally:
            if pidfd is not None:
                os.close(pidfd)
        if proc is not None:
            proc.wait()
        return f" with status {proc.returncode}" if proc is not None else ""

    def _copy(self, out: BinaryIO) -> None:
        if os.fstat(out.fileno()).st_size < out.tell():
            out.seek(0)  # emptied by someone else
        while True:
            raw = out.readline()
            if not raw.endswith(b"\n"):
                out.seek(-len(raw), os.SEEK_CUR)  # a line BIRD is still writing
                break
            line = raw.decode(errors="replace").rstrip()
            self.output.append(line)
            log.info("%s", line)  # BIRD's lines start with "bird: " already
        if out.tell() > LOG_LIMIT:
            # BIRD appends (O_APPEND), so it goes on at the new end; a line written
            # between the read above and this is lost.
            out.truncate(0)
            out.seek(0)
