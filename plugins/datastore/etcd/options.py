"""``[datastore.etcd]`` in calico.toml: where etcd is and how to log in.

Calico's own settings for the same things are ``etcdEndpoints``, ``etcdCACertFile``,
``etcdCertFile``, ``etcdKeyFile``, ``etcdUsername`` and ``etcdPassword``
(``libcalico-go/lib/apiconfig``); here they are snake_case keys of one table::

    [datastore]
    type = "etcd"

    [datastore.etcd]
    endpoints = ["https://10.0.0.1:2379", "https://10.0.0.2:2379"]
    ca_cert_file = "/etc/calico/etcd-ca.pem"
    cert_file = "/etc/calico/etcd-cert.pem"
    key_file = "/etc/calico/etcd-key.pem"
    timeout_seconds = 10
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit

import attrs

from pycalico.core.schema import FieldError, in_range

DEFAULT_ENDPOINT = "http://127.0.0.1:2379"


def endpoint_problem(text: str) -> str | None:
    """Why ``text`` is not an etcd client URL (``http(s)://host[:port]``), or None."""
    try:
        url = urlsplit(text)
        port = url.port
    except ValueError as exc:
        return f"{text!r} is not a valid URL: {exc}"
    if url.scheme not in ("http", "https"):
        return f"{text!r} must start with http:// or https://"
    if not url.hostname:
        return f"{text!r} has no host"
    if url.path not in ("", "/") or url.query or url.fragment:
        return f"{text!r} must be scheme://host[:port] only, without a path"
    if url.username or url.password:
        return f"{text!r} must not carry credentials: use username and password"
    if port == 0:
        return f"{text!r} has port 0"
    return None


@attrs.frozen
class Options:
    endpoints: tuple[str, ...] = attrs.field(default=(DEFAULT_ENDPOINT,), metadata={
        "doc": "etcd client URLs, `http(s)://host[:port]`, tried in turn (Calico's etcdEndpoints)."})
    ca_cert_file: str = attrs.field(default="", metadata={
        "doc": "The CA that etcd's server certificate must come from (etcdCACertFile)."})
    cert_file: str = attrs.field(default="", metadata={
        "doc": "Client certificate (etcdCertFile); needs key_file and https:// endpoints."})
    key_file: str = attrs.field(default="", metadata={"doc": "Client key (etcdKeyFile); needs cert_file."})
    username: str = attrs.field(default="", metadata={"doc": "etcd user (etcdUsername); needs password."})
    password: str = attrs.field(default="", repr=False, metadata={
        "doc": "That user's password (etcdPassword); needs username."})
    timeout_seconds: float = attrs.field(default=10.0, validator=in_range(0.1, 3600), metadata={
        "doc": "Seconds each etcd request may take before etcd counts as unavailable."})

    def __attrs_post_init__(self) -> None:
        # Checked here rather than in field validators so that a problem can name the
        # list item (``endpoints[1]``) or the pair of keys it is about.
        problems = list(self._problems())
        if len(problems) == 1:
            raise problems[0]
        if problems:
            raise ExceptionGroup("invalid [datastore.etcd]", problems)

    def _problems(self):
        if not self.endpoints:
            yield FieldError("endpoints", "must list at least one etcd URL")
        tls = bool(self.cert_file or self.key_file)
        for i, text in enumerate(self.endpoints):
            problem = endpoint_problem(text)
            if problem:
                yield FieldError(f"endpoints[{i}]", problem)
            elif tls and urlsplit(text).scheme != "https":
                yield FieldError(
                    f"endpoints[{i}]", f"{text!r} is plain http but a client certificate is set: use https://"
                )
        if bool(self.cert_file) != bool(self.key_file):
            have, missing = ("cert_file", "key_file") if self.cert_file else ("key_file", "cert_file")
            yield FieldError(missing, f"is required when {have} is set (a client certificate needs its key)")
        for name in ("ca_cert_file", "cert_file", "key_file"):
            path = getattr(self, name)
            if path and not os.path.isfile(path):
                yield FieldError(name, f"no such file: {path}")
        if bool(self.username) != bool(self.password):
            have, missing = ("username", "password") if self.username else ("password", "username")
            yield FieldError(missing, f"is required when {have} is set")

    @property
    def tls(self) -> bool:
        return any(urlsplit(e).scheme == "https" for e in self.endpoints)
