"""TLS with client certificates, and etcd's user/password authentication."""

from __future__ import annotations

import time

import pytest
from etcd_fixtures import WatchRecorder, gns, start_server

from pycalico.core.datastore import DatastoreError


@pytest.fixture
def tls_server(tmp_path, etcd_tls):
    server = start_server(tmp_path / "etcd-tls", tls=etcd_tls)
    try:
        yield server
    finally:
        server.kill()


def test_tls_with_client_certificates(tls_server, etcd_tls, etcd_connect):
    assert tls_server.endpoint.startswith("https://")
    store = etcd_connect(
        tls_server.endpoints,
        ca_cert_file=str(etcd_tls.ca),
        cert_file=str(etcd_tls.client_cert),
        key_file=str(etcd_tls.client_key),
        timeout_seconds=3,
    )
    rec = WatchRecorder(store, store.snapshot().revision)
    try:
        store.create(gns("secure"))
        rec.wait(1)
    finally:
        rec.close()
    assert rec.summary() == [("added", "GlobalNetworkSet", "secure")]
    assert "secure" in tls_server.etcdctl("get", "--prefix", "/calico/", "--keys-only")


def test_tls_without_a_client_certificate_is_refused(tls_server, etcd_tls, etcd_connect):
    began = time.monotonic()
    with pytest.raises(DatastoreError, match="TLS|SSL|certificate"):
        etcd_connect(tls_server.endpoints, ca_cert_file=str(etcd_tls.ca), timeout_seconds=3)
    with pytest.raises(DatastoreError, match="TLS|SSL|certificate"):
        etcd_connect(tls_server.endpoints, timeout_seconds=3)  # the system CAs do not know ours
    assert time.monotonic() - began < 3  # no retrying a certificate problem


@pytest.fixture
def auth_server(tmp_path):
    """etcd with authentication on: root, and a user ``calico`` allowed only /calico/."""
    server = start_server(tmp_path / "etcd-auth", extra=("--auth-token", "simple", "--auth-token-ttl", "2"))
    ctl = server.etcdctl
    ctl("user", "add", "root", "--new-user-password=rootpw")
    ctl("role", "add", "calico")
    ctl("role", "grant-permission", "calico", "--prefix=true", "readwrite", "/calico/")
    ctl("user", "add", "calico", "--new-user-password=s3cret")
    ctl("user", "grant-role", "calico", "calico")
    ctl("auth", "enable")
    try:
        yield server
    finally:
        server.kill()


def test_user_and_password(auth_server, etcd_connect):
    store = etcd_connect(auth_server.endpoints, username="calico", password="s3cret", timeout_seconds=3)
    rec = WatchRecorder(store, store.snapshot().revision)
    try:
        store.create(gns("one"))
        time.sleep(3)  # the simple token expires after 2 s: the client logs in again
        store.create(gns("two"))
        rec.wait(2)
    finally:
        rec.close()
    assert [name for _, _, name in rec.summary()] == ["one", "two"]
    keys = auth_server.etcdctl("get", "--prefix", "/calico/", "--keys-only", user="root:rootpw").split()
    assert [k.rsplit("/", 1)[1] for k in keys] == ["one", "two"]


def test_bad_or_missing_credentials_are_typed_errors(auth_server, etcd_connect):
    with pytest.raises(DatastoreError, match="cannot log in as 'calico'.*authentication failed"):
        etcd_connect(auth_server.endpoints, username="calico", password="wrong", timeout_seconds=3)
    with pytest.raises(DatastoreError, match="user name is empty|permission denied|invalid auth token"):
        etcd_connect(auth_server.endpoints, timeout_seconds=3)
