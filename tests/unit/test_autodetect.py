"""Address autodetection: Calico's method spellings and which address each picks."""

import ipaddress

import pytest

from pycalico.core.autodetect import AutodetectError, Candidate, choose, parse_method


def cand(iface, cidr):
    return Candidate(iface, ipaddress.IPv4Interface(cidr))


FOUND = [
    cand("docker0", "172.17.0.1/16"),
    cand("cali1234", "10.65.0.1/32"),
    cand("eth0", "198.51.100.11/24"),
    cand("eth1", "203.0.113.11/24"),
]


@pytest.mark.parametrize(
    ("method", "picked"),
    [
        ("first-found", "eth0"),
        ("interface=eth1", "eth1"),
        ("interface=ens.*,eth.*", "eth0"),
        ("skip-interface=docker.*,cali.*,eth0", "eth1"),
        ("cidr=203.0.113.0/24", "eth1"),
        ("cidr=192.0.2.0/24,198.51.100.0/24", "eth0"),
    ],
)
def test_each_method_picks_as_calico_does(method, picked):
    assert choose(parse_method(method), FOUND).interface == picked


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("firstfound", "'firstfound' is not an autodetection method"),
        ("first-found=eth0", "first-found takes no argument"),
        ("interface=", "interface= needs an argument"),
        ("interface=eth[", "interface=eth[:"),
        ("cidr=10.0.0.0/33", "cidr=10.0.0.0/33:"),
        ("can-reach=198.51.100.1,198.51.100.2", "can-reach takes one destination"),
    ],
)
def test_bad_methods_say_what_is_wrong(text, message):
    with pytest.raises(ValueError) as info:
        parse_method(text)
    assert str(info.value).startswith(message)


def test_no_match_lists_what_was_seen():
    with pytest.raises(AutodetectError) as info:
        choose(parse_method("interface=bond.*"), FOUND)
    assert "no IPv4 address matches interface=bond.*" in str(info.value)
    assert "eth0 198.51.100.11/24" in str(info.value)


def test_first_found_skips_calicos_own_and_container_interfaces():
    with pytest.raises(AutodetectError):
        choose(parse_method("first-found"), FOUND[:2])


def test_can_reach_uses_the_kernels_source_choice():
    # Loopback is reachable from any namespace; 127.0.0.1 is not a candidate, so the
    # error names the source the kernel chose.
    with pytest.raises(AutodetectError, match="source 127.0.0.1 is on no up interface"):
        choose(parse_method("can-reach=127.0.0.1"), FOUND)


def test_a_detected_address_is_trusted_for_the_poll_interval():
    from pycalico.core.registration import PolledDetect

    now, calls = [100.0], []

    def detect(method):
        calls.append(method)
        if method == "interface=gone":
            raise ValueError("no interface matches")
        return f"address {len(calls)}"

    polled = PolledDetect(clock=lambda: now[0], detect=detect)
    assert polled("first-found", 60) == "address 1"
    now[0] += 59
    assert polled("first-found", 60) == "address 1"  # within the interval: no interface dump
    now[0] += 1
    assert polled("first-found", 60) == "address 2"  # the interval is over: read again
    assert polled("can-reach=198.51.100.1", 60) == "address 3"  # another method is not the same answer
    assert polled("can-reach=198.51.100.1", 0) == "address 4"  # 0: every pass
    with pytest.raises(ValueError):
        polled("interface=gone", 60)
    with pytest.raises(ValueError):
        polled("interface=gone", 60)  # a failure is never kept
    assert calls.count("interface=gone") == 2
