"""IPv6 at the bootinit level without a network: link options, portals and target
specs with bracketed IPv6, a login redirected to an IPv6 portal (fake target)."""

from __future__ import annotations

import argparse
from ipaddress import IPv6Address, IPv6Interface

import pytest

from bootinit.iscsi.keys import encode_text
from bootinit.iscsi.pdu import LoginResponse
from bootinit.iscsi.text import Portal, parse_portal, parse_send_targets
from firmware_tables import parse_target
from netstack.linkopts import LinkOptionError, LinkOptions, add_link_options
from netstack.stack import parse_host
from tests.unit.fake_target import FakeTarget, Harness


def parse(*argv: str) -> LinkOptions:
    p = argparse.ArgumentParser()
    add_link_options(p)
    return LinkOptions.from_args(p.parse_args(["--netns", "ns1", *argv]))


def test_ipv6_options_round_trip() -> None:
    o = parse("--ip6", "fd00::2/64", "--ip6", "[2001:db8::5]/48", "--gateway6", "fe80::1",
              "--slaac", "--no-dad", "--ip6-iid", "stable")
    assert o.ip6 == (IPv6Interface("fd00::2/64"), IPv6Interface("2001:db8::5/48"))
    assert o.gateway6 == IPv6Address("fe80::1") and o.slaac and not o.dad
    cfg = o.ipv6_config()
    assert cfg is not None and cfg.iid == "stable" and len(cfg.secret) == 32
    assert cfg.addresses == o.ip6 and cfg.slaac and not cfg.dad
    again = parse(*[a for a in o.to_argv() if a not in ("--netns", "ns1")])
    assert (again.ip6, again.gateway6, again.slaac, again.dad, again.ip6_iid) == (
        o.ip6, o.gateway6, o.slaac, o.dad, o.ip6_iid)
    assert parse("--ip", "10.0.0.2/24").ipv6_config() is None


@pytest.mark.parametrize(("argv", "option", "words"), [
    (["--ip6", "fd00::2"], "--ip6", "ADDR/PREFIX"),
    (["--ip6", "ff02::1/64"], "--ip6", "unicast"),
    (["--ip6", "10.0.0.1/24"], "--ip6", "not an IPv6"),
    (["--ip6", "fd00::2/64", "--gateway6", "fd01::1"], "--gateway6", "inside"),
    (["--ip6", "fd00::2/64", "--gateway6", "fd00::2"], "--gateway6", "our own"),
    (["--gateway6", "fe80::1"], "--gateway6", "needs --ip6"),
    (["--ip", "10.0.0.2/24", "--no-dad"], "--no-dad", "IPv6"),
    (["--ip6", "fd00::2/64", "--ip6-iid", "mac"], "--ip6-iid", "eui64"),
])
def test_bad_ipv6_options_name_the_option(argv: list[str], option: str, words: str) -> None:
    with pytest.raises(LinkOptionError) as ei:
        parse(*argv)
    assert ei.value.option == option and words in str(ei.value)


def test_hosts_and_portals() -> None:
    assert parse_host("[fd00::1]") == IPv6Address("fd00::1")
    assert parse_host("fe80::1%tap0") == IPv6Address("fe80::1")
    with pytest.raises(ValueError):
        parse_host("fd00::1::2")
    p = parse_portal("[fd00::1]:3261,7")
    assert (p.host, p.port, p.tpgt) == ("fd00::1", 3261, 7) and p.is_ipv6
    assert str(p) == "[fd00::1]:3261,7"
    (t,) = parse_send_targets([("TargetName", "iqn.x:t"),
                               ("TargetAddress", "[fd00::1]:3260,1")])
    assert t.portals[0].host == "fd00::1"
    for text in ("iscsi://[fd00::1]/iqn.2026-11.x:t/1", "iscsi:[fd00::1]::3260:1:iqn.2026-11.x:t",
                 "iscsi://[fd00::1]:3260/iqn.2026-11.x:t/1"):
        spec = parse_target(text)
        assert (spec.host, spec.port, spec.lun) == ("fd00::1", 3260, 1)


def test_login_redirected_to_an_ipv6_portal() -> None:
    t = FakeTarget()
    h = Harness(t)
    first = [True]
    orig = t._login

    def login(req):  # type: ignore[no-untyped-def]
        if first[0]:
            first[0] = False
            t._send(LoginResponse(itt=req.itt, isid=req.isid, status_class=1, status_detail=2,
                                  data=encode_text([("TargetAddress", "[fd00::9]:3261,1")])))
            return
        orig(req)

    t._login = login  # type: ignore[method-assign]
    s = h.login()
    assert h.connects[-1] == Portal("fd00::9", 3261, 1)
    assert s.portal.host == "fd00::9" and s.counters.get("login", "redirects") == 1


@pytest.mark.parametrize("value", ["[fd00::1]:\u00b2", "[fd00::1]:3260,\u00b2", "10.0.0.1:\u0663"])
def test_portal_with_non_ascii_digits_is_a_key_error(value: str) -> None:
    from bootinit.iscsi.errors import KeyFormatError

    with pytest.raises(KeyFormatError):
        parse_portal(value)
