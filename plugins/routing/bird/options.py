"""``[routing.bird]`` in calico.toml.

Every key is optional; the defaults are Calico's paths in the calico/node image::

    [routing]
    type = "bird"

    [routing.bird]
    config_dir = "/etc/calico/confd/config"   # bird.cfg, bird_aggr.cfg, bird_ipam.cfg
    socket = "/var/run/calico/bird.ctl"        # BIRD's control socket (calicoctl node status reads it)
    secrets_dir = "/etc/calico/bgp-secrets"    # BGP passwords: <secrets_dir>/<secret name>/<key>

Calico reads a BGP password from the Kubernetes Secret a ``secretKeyRef`` names; here
the Secret is a directory of files, laid out as Kubernetes mounts a Secret volume.
"""

from __future__ import annotations

from pathlib import Path

import attrs

from pycalico.core.schema import FieldError, absolute_path

# sockaddr_un.sun_path holds 108 bytes, the last one the terminating NUL.
MAX_SOCKET_PATH = 107


_absolute = absolute_path()


def _socket_path(inst, attribute: attrs.Attribute, value: str) -> None:
    _absolute(inst, attribute, value)
    if len(value.encode()) > MAX_SOCKET_PATH:
        raise FieldError(
            attribute.name, f"a unix socket path has at most {MAX_SOCKET_PATH} bytes, {value!r} has {len(value.encode())}"
        )


@attrs.frozen
class Options:
    config_dir: str = attrs.field(default="/etc/calico/confd/config", validator=_absolute, metadata={
        "doc": "Where BIRD's configuration is written (bird.cfg, bird_aggr.cfg, bird_ipam.cfg), "
               "as confd writes it in the calico/node image."})
    socket: str = attrs.field(default="/var/run/calico/bird.ctl", validator=_socket_path, metadata={
        "doc": "BIRD's control socket (birdc -s, calicoctl node status)."})
    secrets_dir: str = attrs.field(default="/etc/calico/bgp-secrets", validator=_absolute, metadata={
        "doc": "BGP passwords, as Kubernetes mounts a Secret volume: `<secrets_dir>/<secret-name>/<key>`."})

    @property
    def config_file(self) -> Path:
        return Path(self.config_dir) / "bird.cfg"

    @property
    def pid_file(self) -> Path:
        return Path(self.config_dir) / "bird.pid"

    @property
    def log_file(self) -> Path:
        """BIRD's output (read into the agent's log; a file, so BIRD outlives the agent)."""
        return Path(self.config_dir) / "bird.log"

    @property
    def loaded_file(self) -> Path:
        """Which configuration the running BIRD has loaded, for the agent that adopts it."""
        return Path(self.config_dir) / "bird.loaded"
