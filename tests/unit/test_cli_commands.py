"""CLI parsing: options before or after the command, portals, CHAP precedence."""

from __future__ import annotations

import argparse

import pytest

from bootinit import cli, commands
from firmware_tables.uri import parse_target


def parse(argv: list[str]) -> argparse.Namespace:
    args = cli.build_parser().parse_args(argv)
    commands.fill_defaults(args)
    return args


def test_options_before_or_after_the_command() -> None:
    a = parse(["--netns", "ns1", "--queue-depth", "8", "readcap", "iscsi://1.2.3.4/iqn.x/1"])
    b = parse(["readcap", "iscsi://1.2.3.4/iqn.x/1", "--netns", "ns1", "--queue-depth", "8"])
    for args in (a, b):
        assert args.netns == "ns1" and args.queue_depth == 8 and args.command == "readcap"
    c = parse(["--mtu", "9000", "read", "iscsi://1.2.3.4/iqn.x/1", "--lba", "5"])
    assert c.mtu == "9000" and c.lba == 5 and c.digest == "none"


@pytest.mark.parametrize("text,want", [
    ("10.0.0.1", ("10.0.0.1", 3260)), ("10.0.0.1:3261", ("10.0.0.1", 3261)),
    ("[fd00::1]", ("fd00::1", 3260)), ("[fd00::1]:860", ("fd00::1", 860))])
def test_portals(text: str, want: tuple[str, int]) -> None:
    assert commands.parse_portal(text) == want


@pytest.mark.parametrize("bad", ["host.example:3260", "10.0.0.1:0", "10.0.0.1:x", "[fd00::1",
                                 "[fd00::1]x"])
def test_bad_portals(bad: str) -> None:
    with pytest.raises(commands.CliError):
        commands.parse_portal(bad)


def test_chap_precedence_and_mutual(monkeypatch: pytest.MonkeyPatch) -> None:
    args = parse(["readcap", "iscsi://1.2.3.4/iqn.x/1"])
    assert commands.chap_for(args, parse_target("iscsi://1.2.3.4/iqn.x/1")) is None
    monkeypatch.setenv(commands.ENV_SECRET, "env-secret-1234")
    args = parse(["readcap", "x", "--user", "u"])
    chap = commands.chap_for(args, None)
    assert chap is not None and chap.username == "u"
    assert "env-secret" not in repr(chap)
    url = parse_target("iscsi://bob%url-secret-99@1.2.3.4/iqn.x/1")
    chap = commands.chap_for(args, url)
    assert chap is not None and chap.username == "bob"  # the URL wins
    args = parse(["readcap", "x", "--user", "u", "--target-user", "t",
                  "--target-secret", "other-secret-567"])
    chap = commands.chap_for(args, None)
    assert chap is not None and chap.target_username == "t"
    monkeypatch.delenv(commands.ENV_SECRET)
    with pytest.raises(commands.CliError, match="both a user and a secret"):
        commands.chap_for(parse(["readcap", "x", "--user", "u"]), None)
    with pytest.raises(commands.CliError, match="needs our own"):
        commands.chap_for(parse(["readcap", "x", "--target-user", "t", "--target-secret",
                                 "y-secret-000"]), None)
