"""One node's BGP speaker: rendered files on disk, and the BIRD that runs them.

:meth:`Speaker.apply` converges in confd's order (``confd/pkg/resource/template/resource.go``):
compare the rendered files with those on disk, stage the new ones next to them, have
BIRD check them (``bird -p -c``), move them into place, then reload BIRD
(``configure`` on its control socket). BIRD is reloaded only when the configuration
it runs differs from the rendered one, so a pass that changes nothing touches no
session. A configuration BIRD refuses is never installed: the running BIRD keeps the
last good one, and the refusal is raised (the pass reports it) and kept for status.

Which files the running BIRD has loaded is also kept on disk (``bird.loaded``: BIRD's pid
and a digest of the files), so that an agent that adopts the BIRD an earlier agent left
running knows whether it must reload it: after a restart with nothing changed, none.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import threading
from pathlib import Path

from . import control
from .daemon import Daemon
from .options import Options
from .render import FILES, MAIN


class ConfigRejected(Exception):
    """BIRD refused a rendered configuration (``bird -p`` failed)."""


def read_files(directory: Path) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in FILES:
        try:
            out[name] = (directory / name).read_text()
        except FileNotFoundError:
            out[name] = None
    return out


def digest(texts: dict[str, str | None]) -> str:
    h = hashlib.sha256()
    for name in FILES:
        h.update(f"{name}\0{texts.get(name)}\0".encode())
    return h.hexdigest()


def check(bird: str, config_file: Path) -> None:
    """``bird -p``: parse the configuration (with its includes) without running it."""
    res = subprocess.run([bird, "-p", "-c", str(config_file)], capture_output=True, text=True)
    if res.returncode != 0:
        raise ConfigRejected((res.stderr or res.stdout).strip() or f"bird -p exited with status {res.returncode}")


def install(directory: Path, texts: dict[str, str], bird: str = "bird") -> None:
    """Check ``texts`` as a whole, then move each file into ``directory`` by rename."""
    directory.mkdir(parents=True, exist_ok=True)
    staging = directory / f".staging-{os.getpid()}-{threading.get_native_id()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        for name in FILES:
            (staging / name).write_text(texts[name])
        check(bird, staging / MAIN)
        for name in FILES:  # includes first: bird.cfg never names a file not yet there
            os.replace(staging / name, directory / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


class Speaker:
    def __init__(self, options: Options, bird: str = "bird"):
        self.options = options
        self.bird = bird
        self.daemon = Daemon(options.config_file, options.socket, options.pid_file, options.log_file, bird)
        self.lock = threading.Lock()
        self.loaded: dict[str, str | None] | None = None  # what the running BIRD was given
        self.loaded_generation = 0
        self.rejected = ""  # why BIRD refused the last rendered configuration
        self.problems: tuple[str, ...] = ()

    def apply(self, texts: dict[str, str], problems: tuple[str, ...] = ()) -> list[str]:
        """Converge files and BIRD on ``texts``; one line per change."""
        with self.lock:
            self.problems = problems
            directory = Path(self.options.config_dir)
            changes: list[str] = []
            on_disk = read_files(directory)
            if self.daemon.pid is not None and self.daemon.generation != self.loaded_generation:
                # Restarted by its supervisor since our last look: it read what the disk
                # holds, which only this method changes, below.
                self._loaded(on_disk)
            if on_disk != texts:
                try:
                    install(directory, texts, self.bird)
                except ConfigRejected as exc:
                    self.rejected = str(exc)
                    raise
                changes.append(f"bird config written to {directory}")
            self.rejected = ""
            if self.daemon.pid is None:
                pid = self.daemon.start()
                if self.daemon.adopted:
                    self._adopted(pid, directory)
                else:
                    changes.append(f"bird started (pid {pid})")
                    self._loaded(texts)
            if self.loaded != texts:
                self.loaded = None  # unknown until BIRD confirms
                control.configure(self.options.socket)
                self._loaded(texts)
                changes.append("bird reconfigured")
            return changes

    def _loaded(self, texts: dict) -> None:
        self.loaded = dict(texts)
        self.loaded_generation = self.daemon.generation
        pid = self.daemon.pid
        if pid is not None:
            marker = self.options.loaded_file
            staged = marker.with_name(f".{marker.name}-{os.getpid()}")
            staged.write_text(f"{pid} {digest(texts)}\n")
            os.replace(staged, marker)

    def _adopted(self, pid: int, directory: Path) -> None:
        """The files an adopted BIRD runs: those on disk if the marker says it loaded
        them, else unknown (the caller reloads it)."""
        on_disk = read_files(directory)
        try:
            marker = self.options.loaded_file.read_text().split()
        except OSError:
            marker = []
        self.loaded = on_disk if marker == [str(pid), digest(on_disk)] else None
        self.loaded_generation = self.daemon.generation

    def stop(self) -> None:
        self.daemon.stop()

    def sessions(self) -> list[control.Protocol]:
        """BIRD's BGP protocols, as ``show protocols`` lists them."""
        return [p for p in control.protocols(self.options.socket) if p.proto == "BGP"]
