"""Bare lab nodes: a node that looks like a machine of its own to whatever runs in it.

A bare node's namespaces are held by one process (the *holder*) that sleeps in them:
the node's network namespace, a UTS namespace whose host name is the node's name, and a
mount namespace in which

- /etc, /opt, /var, /usr/local and /root are overlays: the host's files below, the
  node's own writes above, in ``<root>/upper`` inside the lab's state directory;
- /run is a tmpfs of the node's own, with the host's /run/netns mounted back in (as a
  slave, so pods' namespaces made later still show), since a runtime hands the CNI
  plugin a path there.

So an installer (Ansible, over the ``calico_lab`` connection plugin) can provision the
node as it would a bare-metal host, and nothing of the host's /etc, /opt or /run
changes. /usr outside /usr/local stays the host's, read and written alike: installers
must find the system packages already there (``make deps`` puts them there).

Mounts made inside never reach the host (``unshare --propagation slave``), and the
mount namespace ends with the last process in it; ``Lab.down`` ends the holder and
then every process left in the node's network namespace.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .state import LabError

OVERLAID = ("etc", "opt", "var", "usr/local", "root")

# What a login on a Debian machine starts with: the host's venv and the lab's own
# variables must not leak into the node.
ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
    "LANG": "C.UTF-8",
}

# $1: the node's root directory, $2: its host name. The final exec keeps the pid, so
# /proc/<pid>/comm turning into "sleep" says every mount is in place.
_SETUP = r"""
set -eu
root=$1
for d in {dirs}; do
    mkdir -p "$root/upper/$d" "$root/work/$d"
    mount -t overlay overlay -o "lowerdir=/$d,upperdir=$root/upper/$d,workdir=$root/work/$d" "/$d"
done
mkdir -p "$root/netns"
mount --rbind /run/netns "$root/netns"
mount -t tmpfs -o mode=0755 tmpfs /run
mkdir -p /run/netns /run/lock
mount --move "$root/netns" /run/netns
hostname "$2"
exec sleep infinity
""".format(dirs=" ".join(OVERLAID))


def check_root(root: Path) -> None:
    """Refuse a node root inside a directory it overlays: overlayfs cannot stack a
    layer on itself."""
    for d in OVERLAID:
        if root == Path("/", d) or Path("/", d) in root.parents:
            raise LabError(f"the lab's state directory must not be under /{d} for bare nodes "
                           f"({root}); pick another with --state-dir")


def holder_argv(root: str | Path, hostname: str) -> list[str]:
    """The holder's command, to be run inside the node's network namespace."""
    return ["unshare", "--mount", "--uts", "--propagation", "slave", "--",
            "sh", "-c", _SETUP, "sh", str(root), hostname]


def settled(pid: int) -> bool:
    """Whether the holder has made its mounts (it sleeps once they are in place)."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip() == "sleep"
    except OSError:
        return False


def enter_argv(pid: int, argv: Sequence[str]) -> list[str]:
    """``argv`` inside the holder's mount, network and UTS namespaces."""
    return ["nsenter", "-t", str(pid), "-m", "-n", "-u", "--", *argv]
