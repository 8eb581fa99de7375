"""``[datastore.kubernetes]`` in calico.toml: which API server, as whom.

Calico's own settings for the same things are ``kubeconfig`` / ``$KUBECONFIG``
(``libcalico-go/lib/apiconfig``); here::

    [datastore]
    type = "kubernetes"

    [datastore.kubernetes]
    kubeconfig = "/etc/cni/net.d/calico-kubeconfig"   # "" = in-cluster, then ~/.kube/config
    context = ""                                      # "" = the kubeconfig's current context
    timeout_seconds = 10

``timeout_seconds`` bounds every request, and how long a watch keeps retrying an API
server that does not answer before it raises DatastoreUnavailable.
"""

from __future__ import annotations

import os

import attrs

from pycalico.core.schema import FieldError, in_range


@attrs.frozen
class Options:
    kubeconfig: str = attrs.field(default="", metadata={
        "doc": "The kubeconfig file to reach the API server with (Calico's kubeconfig). Empty: "
               "in-cluster, then $KUBECONFIG, then ~/.kube/config."})
    context: str = attrs.field(default="", metadata={
        "doc": "The kubeconfig context to use; empty: its current context."})
    timeout_seconds: float = attrs.field(default=10.0, validator=in_range(0.1, 3600), metadata={
        "doc": "Seconds each request may take, and how long a watch retries an API server that "
               "does not answer before the datastore counts as unavailable."})

    def __attrs_post_init__(self) -> None:
        if self.kubeconfig and not os.path.isfile(os.path.expanduser(self.kubeconfig)):
            raise FieldError("kubeconfig", f"no such file: {self.kubeconfig}")
