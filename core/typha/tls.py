"""TLS between agents and Typha, as Calico sets it up (``typha/pkg/tlsutils``).

Both sides present a certificate signed by the CA the other trusts (TLS 1.2 at
least). Neither checks host names: each checks that the peer's certificate carries
the Common Name or the URI SAN it was told to expect (Typha: ``ClientCN`` /
``ClientURISAN``; the agent: ``TyphaCN`` / ``TyphaURISAN``); with both set, either
one will do.
"""

from __future__ import annotations

import ssl
from typing import Any


def server_context(cert_file: str, key_file: str, ca_file: str) -> ssl.SSLContext:
    """Typha's side: its certificate, and client certificates required and checked
    against ``ca_file``."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_file, key_file)
    context.load_verify_locations(ca_file)
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def client_context(cert_file: str, key_file: str, ca_file: str) -> ssl.SSLContext:
    """The agent's side: its certificate, and Typha's checked against ``ca_file``
    (the peer name is checked by ``peer_problem``, not the host name)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = False
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_cert_chain(cert_file, key_file)
    context.load_verify_locations(ca_file)
    return context


def peer_problem(cert: dict[str, Any] | None, cn: str, uri_san: str) -> str | None:
    """Why a verified peer certificate (``SSLSocket.getpeercert()``) is not the one
    expected, in Calico's words; None when it is."""
    if not cert:
        return "peer presented no certificate"
    names = [value for rdn in cert.get("subject", ()) for key, value in rdn if key == "commonName"]
    uris = [value for key, value in cert.get("subjectAltName", ()) if key == "URI"]
    cn_found = bool(cn) and cn in names
    uri_found = bool(uri_san) and uri_san in uris
    if cn and uri_san:
        return None if cn_found or uri_found else "peer certificate does not have required CN or URI SAN"
    if cn:
        return None if cn_found else "peer certificate does not have required CN"
    if uri_san:
        return None if uri_found else "peer certificate does not have required URI SAN"
    return None
