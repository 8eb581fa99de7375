"""``[typha]`` in calico.toml (Felix's Typha* parameters, and calico-typha's own under
``[typha.server]``), and Calico's peer-name rule for TLS."""

import pytest

from pycalico.core import config as cfg
from pycalico.core.typha import tls


def errors_of(text):
    with pytest.raises(cfg.ConfigError) as info:
        cfg.parse(text, "calico.toml")
    return info.value.lines


def test_defaults_are_calicos():
    typha = cfg.parse("").typha
    assert typha.addresses == () and (typha.read_timeout_seconds, typha.write_timeout_seconds) == (30, 10)
    s = typha.server
    assert (s.port, s.max_connections, s.max_message_size) == (5473, 10000, 100)
    assert (s.ping_interval_seconds, s.pong_timeout_seconds, s.handshake_timeout_seconds) == (10, 60, 10)
    assert (s.max_fall_behind_seconds, s.new_client_fall_behind_grace_seconds) == (300, 300)
    assert (s.health.port, s.metrics.port, s.metrics.enabled) == (9098, 9093, False)
    # A table that names some keys keeps Typha's defaults for the others.
    partial = cfg.parse("[typha.server.metrics]\nenabled = true\n[typha.server.health]\nhost = '0.0.0.0'\n")
    assert (partial.typha.server.metrics.host, partial.typha.server.metrics.port) == ("0.0.0.0", 9093)
    assert (partial.typha.server.health.enabled, partial.typha.server.health.port) == (True, 9098)


def test_each_bad_address_is_named_by_its_index():
    lines = errors_of('[typha]\naddresses = ["10.0.0.1:5473", "typha", "[2001:db8::2]:5473", "2001:db8::2:5473",'
                      ' "t:0"]\n')
    assert lines == [
        "typha.addresses[1]: 'typha' is not host:port (e.g. 198.51.100.2:5473)",
        "typha.addresses[3]: '2001:db8::2:5473' is not host:port (an IPv6 host goes in brackets: [2001:db8::2]:5473)",
        "typha.addresses[4]: 't:0': port must be between 1 and 65535",
    ]
    assert cfg.split_address("[2001:db8::2]:5473") == ("2001:db8::2", 5473)


def test_client_tls_is_all_or_none_naming_what_is_missing(tmp_path):
    cert = tmp_path / "cert.pem"
    cert.write_text("x")
    rule = "(Typha client TLS is all or none: key_file, cert_file, ca_file and cn or uri_san)"
    assert errors_of(f'[typha]\ncert_file = "{cert}"\nuri_san = "spiffe://x"\n') == [
        f"typha.key_file: is required {rule}",
        f"typha.ca_file: is required {rule}",
    ]
    assert errors_of(f'[typha]\ncert_file = "{cert}"\nkey_file = "{cert}"\nca_file = "{cert}"\n') == [
        f"typha.cn: cn or uri_san is required {rule}",
    ]
    missing = tmp_path / "nope"
    assert errors_of(f'[typha]\ncert_file = "{missing}"\n')[0] == f"typha.cert_file: no such file: {missing}"
    ok = cfg.parse(f'[typha]\ncert_file = "{cert}"\nkey_file = "{cert}"\nca_file = "{cert}"\ncn = "typha"\n').typha
    assert ok.tls


def test_server_settings_name_their_problem():
    assert errors_of('[typha.server]\nport = 0\n') == ["typha.server.port: must be between 1 and 65535, got 0"]
    # The checks across keys run once every key is well-typed.
    lines = errors_of('[typha.server]\nclient_cn = "calico-node"\nping_interval_seconds = 30\n')
    assert "typha.server.pong_timeout_seconds: must be more than twice ping_interval_seconds (30), got 60" in lines
    assert ("typha.server.key_file: is required (server TLS is all or none: key_file, cert_file, ca_file and "
            "client_cn or client_uri_san)") in lines


def cert(cn=None, uris=()):
    subject = ((("organizationName", "x"),),) + (((("commonName", cn),),) if cn else ())
    return {"subject": subject, "subjectAltName": tuple(("URI", u) for u in uris) + (("DNS", "typha"),)}


@pytest.mark.parametrize("peer, cn, uri, problem", [
    (cert("typha"), "typha", "", None),
    (cert("other"), "typha", "", "peer certificate does not have required CN"),
    (cert(uris=["spiffe://c/typha"]), "", "spiffe://c/typha", None),
    (cert("typha", ["spiffe://c/other"]), "", "spiffe://c/typha", "peer certificate does not have required URI SAN"),
    (cert("other", ["spiffe://c/typha"]), "typha", "spiffe://c/typha", None),  # either will do
    (cert("typha"), "typha", "spiffe://c/typha", None),
    (cert("other"), "typha", "spiffe://c/typha", "peer certificate does not have required CN or URI SAN"),
    (None, "typha", "", "peer presented no certificate"),
])
def test_peer_names_as_calicos_certificate_verifier(peer, cn, uri, problem):
    assert tls.peer_problem(peer, cn, uri) == problem


def test_calico_typha_check_config_names_each_bad_key(tmp_path, capsys):
    from pycalico.core.typha.main import main

    path = tmp_path / "calico.toml"
    path.write_text('[typha.server]\nport = 70000\nmax_conections = 5\n')
    assert main(["--check-config", "--config", str(path)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0] == f"{path}: typha.server.port: must be between 1 and 65535, got 70000"
    assert err[1].startswith(f"{path}: typha.server.max_conections: unknown key; did you mean 'max_connections'?")
    path.write_text("[typha.server]\nport = 5474\n")
    assert main(["--check-config", "--config", str(path)]) == 0
    assert capsys.readouterr().out == f"{path}: ok\n"
