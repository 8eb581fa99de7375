"""Ansible connection plugin: tasks run inside a pycalico lab's bare node.

A bare node (``calico-lab up --bare``) has its own network, mount and UTS namespaces,
held by one process; its /etc, /opt, /var, /usr/local and /root are its own. Every
command of a task runs there through ``nsenter``, and files are streamed in and out
through the same door, so a playbook provisions the node exactly as it would a
bare-metal host and nothing of the real host changes. The lab's state (which process
holds which node) is read with pycalico's own lab code, so the controller needs
pycalico installed, as it has when it runs the lab.
"""

from __future__ import annotations

DOCUMENTATION = r"""
name: calico_lab
short_description: Run tasks inside a bare node of a pycalico lab
description:
  - Runs commands and copies files inside the namespaces of a node made with
    C(calico-lab up --bare), as if it were a machine of its own.
  - C(calico-lab inventory) prints an inventory that sets every variable below.
author: pycalico
version_added: "0.1.0"
options:
  remote_addr:
    description: The lab node's name (node1, node2, ...).
    default: inventory_hostname
    vars:
      - name: inventory_hostname
      - name: ansible_host
  lab_name:
    description: The lab's name, as given to C(calico-lab up --name).
    default: lab
    vars:
      - name: calico_lab_name
  state_root:
    description: The directory holding the lab's state (C(calico-lab --state-dir));
      empty means calico-lab's default.
    default: ""
    vars:
      - name: calico_lab_state_root
"""

import os
import shlex
import subprocess

from ansible.errors import AnsibleConnectionFailure, AnsibleError, AnsibleFileNotFound
from ansible.plugins.connection import ConnectionBase
from ansible.utils.display import Display

display = Display()


class Connection(ConnectionBase):
    """One lab node, entered afresh for every command (there is nothing to keep open)."""

    transport = "calico_lab"
    has_pipelining = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._lab = None
        self._node = None

    def _connect(self):
        if self._connected:
            return self
        try:
            from pycalico.core.lab.cluster import Lab
            from pycalico.core.lab.state import LabError
        except ImportError as e:
            raise AnsibleConnectionFailure(f"calico_lab needs pycalico on the controller: {e}") from None
        name, node = self.get_option("lab_name"), self.get_option("remote_addr")
        try:
            self._lab = Lab.load(name, self.get_option("state_root") or None)
            self._node = self._lab.node(node)
            if not self._node.root:
                raise LabError(f"node {node} of lab {name!r} is not bare (make the lab with --bare)")
            self._lab.node_argv(self._node, ["true"])  # the holder must still run
        except LabError as e:
            raise AnsibleConnectionFailure(f"calico_lab: {e}") from None
        display.vvv(f"ENTER lab {name} node {node}", host=node)
        self._connected = True
        return self

    def _run(self, argv, stdin_data=None, stdin_file=None):
        from pycalico.core.lab.machine import ENV

        full = self._lab.node_argv(self._node, argv)
        stdin = stdin_file if stdin_file is not None else (subprocess.PIPE if stdin_data is not None else subprocess.DEVNULL)
        proc = subprocess.Popen(full, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(ENV))
        out, err = proc.communicate(stdin_data)
        return proc.returncode, out, err

    def exec_command(self, cmd, in_data=None, sudoable=True):
        super().exec_command(cmd, in_data=in_data, sudoable=sudoable)
        display.vvv(f"EXEC {cmd}", host=self._node.name)
        return self._run(["/bin/sh", "-c", cmd], stdin_data=in_data)

    def put_file(self, in_path, out_path):
        super().put_file(in_path, out_path)
        display.vvv(f"PUT {in_path} TO {out_path}", host=self._node.name)
        if not os.path.exists(in_path):
            raise AnsibleFileNotFound(f"file or module does not exist: {in_path}")
        with open(in_path, "rb") as src:
            rc, _, err = self._run(["/bin/sh", "-c", f"cat > {shlex.quote(out_path)}"], stdin_file=src)
        if rc != 0:
            raise AnsibleError(f"failed to put {in_path} to {self._node.name}:{out_path}: "
                               f"{err.decode(errors='replace').strip()}")

    def fetch_file(self, in_path, out_path):
        super().fetch_file(in_path, out_path)
        display.vvv(f"FETCH {in_path} TO {out_path}", host=self._node.name)
        rc, out, err = self._run(["cat", in_path])
        if rc != 0:
            raise AnsibleError(f"failed to fetch {self._node.name}:{in_path}: "
                               f"{err.decode(errors='replace').strip()}")
        with open(out_path, "wb") as dst:
            dst.write(out)

    def close(self):
        self._connected = False
