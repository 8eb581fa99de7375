"""One BIRD process, started in the caller's network namespace and kept running.

BIRD runs as calico-node runs it (``bird -R -s <socket> -d -c <bird.cfg>``, plus a pid
file), in the foreground as a child of a supervisor thread. The thread is created by
the first :meth:`Daemon.start`, so it lives in that caller's network namespace, and so
does every BIRD it starts. It reads BIRD's output into the log, and when BIRD exits
without being asked to, starts it again after a back-off (1 s, doubling to 30 s while
BIRD keeps dying within a minute of its start).

BIRD must not outlive the agent: it is started through ``setpriv --pdeathsig TERM``, so
the kernel signals it when the supervisor thread (hence the agent) dies, even by
SIGKILL; :meth:`Daemon.stop` ends it on an orderly shutdown. A BIRD left behind by an
earlier agent under the same pid file and socket is ended before a new one starts.
"""

from __future__ import annotations

import collections
import logging
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

from . import control

log = logging.getLogger(__name__)

BACKOFF_MAX = 30.0
STABLE_SECONDS = 60.0  # a BIRD that ran this long is not crash-looping
START_TIMEOUT = 10.0


class Daemon:
    def __init__(self, config_file: Path, socket: str, pid_file: Path, bird: str = "bird"):
        self.config_file = config_file
        self.socket = socket
        self.pid_file = pid_file
        self.bird = bird
        self.restarts = 0  # times BIRD was started again after dying
        self.generation = 0  # bumped at every start: a new BIRD has read bird.cfg from disk
        self.output: collections.deque[str] = collections.deque(maxlen=40)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._proc: subprocess.Popen | None = None
        self.failure = ""  # why the last start failed (no BIRD executable, ...)

    def argv(self) -> list[str]:
        argv = [self.bird, "-R", "-s", self.socket, "-d", "-c", str(self.config_file), "-P", str(self.pid_file)]
        setpriv = shutil.which("setpriv")
        return [setpriv, "--pdeathsig", "TERM", *argv] if setpriv else argv

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def start(self, timeout: float = START_TIMEOUT) -> int:
        """Have BIRD running and answering on its socket; its pid.

        Starts the supervisor (in the calling thread's network namespace) unless it
        runs. Raises control.BirdError if BIRD does not come up within ``timeout``,
        with what it printed.
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
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    # -- the supervisor thread ----------------------------------------------------------

    def _supervise(self) -> None:
        delay = 0.0
        while not self._stop.is_set():
            self._end_stale()
            Path(self.socket).parent.mkdir(parents=True, exist_ok=True)
            self.failure = ""
            try:
                proc = subprocess.Popen(
                    self.argv(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
                )
            except OSError as exc:
                self.failure = f"cannot start {self.bird}: {exc.strerror or exc}"
                log.error("%s", self.failure)
                proc = None
            started = time.monotonic()
            if proc is not None:
                self._proc = proc
                self.generation += 1
                log.info("BIRD started (pid %d)", proc.pid)
                for raw in proc.stdout:  # until BIRD closes its output, i.e. exits
                    line = raw.decode(errors="replace").rstrip()
                    self.output.append(line)
                    log.info("%s", line)  # BIRD's lines start with "bird: " already
                code = proc.wait()
                proc.stdout.close()
                if self._stop.is_set():
                    return
                self.failure = f"BIRD exited with status {code}: " + "; ".join(list(self.output)[-3:])
                log.warning("%s; starting it again", self.failure)
                self.restarts += 1
            stable = time.monotonic() - started >= STABLE_SECONDS
            delay = 1.0 if stable or not delay else min(delay * 2, BACKOFF_MAX)
            self._stop.wait(delay)

    def _end_stale(self) -> None:
        """End a BIRD an earlier agent left running on our pid file and socket."""
        try:
            pid = int(self.pid_file.read_text().split()[0])
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError, IndexError):
            return
        if os.path.basename(argv[0]) != b"bird" or self.socket.encode() not in argv:
            return  # the pid was reused by something else
        log.warning("ending BIRD pid %d left by an earlier run", pid)
        os.kill(pid, signal.SIGTERM)
        for _ in range(100):
            if not Path(f"/proc/{pid}").exists():
                return
            time.sleep(0.05)
        os.kill(pid, signal.SIGKILL)
