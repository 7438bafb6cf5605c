"""iscsi:// URLs (libiscsi/QEMU syntax) and RFC 4173 root paths (iPXE, DHCP option 17)."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address

import pytest

from firmware_tables.errors import ConfigError, UriError
from firmware_tables.lun import (
    format_lun_groups,
    lun_from_sam,
    lun_to_sam,
    parse_lun_groups,
)
from firmware_tables.target import ChapCredentials, TargetSpec
from firmware_tables.uri import (
    format_iscsi_url,
    format_root_path,
    mask_url,
    parse_iscsi_url,
    parse_root_path,
    parse_target,
)

# -- URLs -------------------------------------------------------------------------------


def test_url_minimal() -> None:
    s = parse_iscsi_url("iscsi://10.77.5.1/iqn.2026-11.test:disk/1")
    assert s == TargetSpec(host="10.77.5.1", name="iqn.2026-11.test:disk", port=3260, lun=1)
    assert s.chap is None and s.address == IPv4Address("10.77.5.1")


def test_url_full_with_credentials_and_port() -> None:
    s = parse_iscsi_url("iscsi://joe%sesame-sesame@san.example:3261/iqn.2026-11.test:disk/12")
    assert (s.host, s.port, s.name, s.lun) == ("san.example", 3261, "iqn.2026-11.test:disk", 12)
    assert s.chap == ChapCredentials("joe", "sesame-sesame")
    assert s.address is None


def test_url_secret_is_literal_like_libiscsi() -> None:
    # libiscsi splits at the first '%' and does not decode the secret
    s = parse_iscsi_url("iscsi://joe%pa%41ss@h/iqn.x/0")
    assert s.chap is not None and s.chap.secret == "pa%41ss"
    # ':' also separates when there is no '%'
    s = parse_iscsi_url("iscsi://joe:pw@h/iqn.x/0")
    assert s.chap == ChapCredentials("joe", "pw")


def test_url_ipv6_and_percent_decoded_target() -> None:
    s = parse_iscsi_url("iscsi://[2001:db8::1]:3262/iqn.2026-11.test%3Adisk%20one/7")
    assert s.host == "2001:db8::1" and s.address == IPv6Address("2001:db8::1")
    assert s.port == 3262 and s.name == "iqn.2026-11.test:disk one" and s.lun == 7
    assert parse_iscsi_url("iscsi://[::ffff:10.0.0.1]/iqn.x/0").host == "10.0.0.1"
    assert parse_iscsi_url("ISCSI://h/iqn.x/0").host == "h"


@pytest.mark.parametrize(("url", "part", "words"), [
    ("http://h/iqn/1", "scheme", "not an iSCSI URL"),
    ("iser://h/iqn/1", "scheme", "iSER"),
    ("iscsi://h", "target", "missing /<target-name>/<lun>"),
    ("iscsi://h/iqn.x", "lun", "missing /<lun>"),
    ("iscsi://h//1", "target", "empty target name"),
    ("iscsi://h/iqn.x/one", "lun", "not a decimal number"),
    ("iscsi://h/iqn.x/-1", "lun", "not a decimal number"),
    ("iscsi://h/iqn.x/1/2", "lun", "not a decimal number"),
    ("iscsi://h/iqn.x/18446744073709551616", "lun", "LUN"),
    ("iscsi://h:0/iqn.x/1", "port", "port '0'"),
    ("iscsi://h:65536/iqn.x/1", "port", "65535"),
    ("iscsi://h:/iqn.x/1", "port", "port ''"),
    ("iscsi://2001:db8::1/iqn.x/1", "host", "brackets"),
    ("iscsi://[2001:db8::1/iqn.x/1", "host", "bracketed IPv6"),
    ("iscsi://[10.0.0.1]/iqn.x/1", "host", "bracketed IPv6"),
    ("iscsi://[::1]x/iqn.x/1", "port", ":<port>"),
    ("iscsi:///iqn.x/1", "host", "host ''"),
    ("iscsi://bad host/iqn.x/1", "host", "not an IP address or host name"),
    ("iscsi://joe@h/iqn.x/1", "credentials", "without a secret"),
    ("iscsi://%pw@h/iqn.x/1", "credentials", "empty"),
    ("iscsi://h/iqn.x/1?target_user=t&target_password=p", "query", "mutual CHAP"),
    ("iscsi://h/iqn.x/1#frag", "target", "fragment"),
    ("iscsi://h/iqn%zz/1", "target", "percent-escape"),
    ("iscsi://h/iqn%ff/1", "target", "UTF-8"),
])
def test_url_errors_name_the_part(url: str, part: str, words: str) -> None:
    with pytest.raises(UriError) as info:
        parse_iscsi_url(url)
    assert info.value.part == part
    assert words in str(info.value)


def test_url_errors_never_show_the_secret() -> None:
    with pytest.raises(UriError) as info:
        parse_iscsi_url("iscsi://joe%topsecret@h/iqn.x/nope")
    assert "topsecret" not in str(info.value) and "joe%***@h" in str(info.value)
    assert mask_url("iscsi://joe:pw@h/x/1") == "iscsi://joe:***@h/x/1"
    assert mask_url("iscsi://h/x/1") == "iscsi://h/x/1"


def test_format_url_masks_secret_and_round_trips() -> None:
    s = TargetSpec(host="2001:db8::1", name="iqn.x:disk one", port=3261, lun=300,
                   chap=ChapCredentials("joe", "sesame-sesame"))
    assert format_iscsi_url(s) == "iscsi://joe%***@[2001:db8::1]:3261/iqn.x:disk%20one/300"
    shown = format_iscsi_url(s, show_secret=True)
    assert shown == "iscsi://joe%sesame-sesame@[2001:db8::1]:3261/iqn.x:disk%20one/300"
    assert parse_iscsi_url(shown) == s


def test_format_url_refuses_unwritable_credentials() -> None:
    s = TargetSpec(host="h", name="iqn.x", chap=ChapCredentials("joe", "a@b"))
    assert "***" in format_iscsi_url(s)
    with pytest.raises(UriError) as info:
        format_iscsi_url(s, show_secret=True)
    assert "a@b" not in str(info.value)
    with pytest.raises(UriError):
        format_iscsi_url(TargetSpec(host="h", name="iqn.x", chap=ChapCredentials("jo%e", "x")))


def test_mutual_chap_is_not_in_urls() -> None:
    s = TargetSpec(host="h", name="iqn.x", chap=ChapCredentials("u", "s"),
                   reverse_chap=ChapCredentials("t", "r"))
    url = format_iscsi_url(s, show_secret=True)
    assert url == "iscsi://u%s@h:3260/iqn.x/0"
    assert parse_iscsi_url(url).reverse_chap is None


# -- root paths -----------------------------------------------------------------------------


def test_ipxe_root_path() -> None:
    s = parse_root_path("iscsi:10.77.5.1:::1:iqn.2026-11.test:disk")
    assert s == TargetSpec(host="10.77.5.1", name="iqn.2026-11.test:disk", port=3260, lun=1)


def test_root_path_all_fields() -> None:
    s = parse_root_path("iscsi:[2001:db8::1]:6:3261:4752-3A4F-6b7e-2F99:iqn.x:a:b")
    assert s.host == "2001:db8::1" and s.port == 3261 and s.name == "iqn.x:a:b"
    assert lun_to_sam(s.lun) == bytes.fromhex("47523a4f6b7e2f99")
    s = parse_root_path("iscsi:san.example::::iqn.x")
    assert (s.host, s.port, s.lun) == ("san.example", 3260, 0)


def test_root_path_lun_is_hex() -> None:
    assert parse_root_path("iscsi:h:::10:iqn.x").lun == 16
    assert parse_root_path("iscsi:h:::ff:iqn.x").lun == 255


@pytest.mark.parametrize(("text", "part"), [
    ("iscsi:", "host"),
    ("iscsi:h", "host"),
    ("iscsi:h:::1", "target"),
    ("iscsi:h::::", "target"),
    ("iscsi::::1:iqn.x", "host"),
    ("iscsi:h:17::1:iqn.x", "protocol"),
    ("iscsi:h::port:1:iqn.x", "port"),
    ("iscsi:h:::12345:iqn.x", "lun"),
    ("iscsi:h:::1-2-3-4-5:iqn.x", "lun"),
    ("iscsi:h:::g:iqn.x", "lun"),
    ("iscsi:[::1:::1:iqn.x", "host"),
    ("iscsi:[::1]x:::1:iqn.x", "host"),
    ("iscsi://h/iqn.x/1", "scheme"),
    ("nfs:h:/x", "scheme"),
])
def test_root_path_errors(text: str, part: str) -> None:
    with pytest.raises(UriError) as info:
        parse_root_path(text)
    assert info.value.part == part


def test_format_root_path_round_trips() -> None:
    for spec in (
        TargetSpec(host="10.77.5.1", name="iqn.2026-11.test:disk", lun=1),
        TargetSpec(host="2001:db8::1", name="iqn.x:y", port=3999, lun=0x412C),
        TargetSpec(host="h", name="iqn.x", lun=0),
    ):
        assert parse_root_path(format_root_path(spec)) == spec
    assert format_root_path(TargetSpec(host="10.77.5.1", name="iqn.2026-11.test:disk", lun=1)) \
        == "iscsi:10.77.5.1:::1:iqn.2026-11.test:disk"


def test_parse_target_dispatches() -> None:
    assert parse_target("iscsi://h/iqn.x/3").lun == 3
    assert parse_target("iscsi:h:::3:iqn.x").lun == 3


# -- LUN forms ------------------------------------------------------------------------------


@pytest.mark.parametrize(("lun", "sam"), [
    (0, "0000000000000000"), (1, "0001000000000000"), (255, "00ff000000000000"),
    (300, "012c000000000000"), (0x412C, "412c000000000000"),
    (0x0002_0001, "0001000200000000"), ((1 << 64) - 1, "ffffffffffffffff"),
])
def test_lun_linux_integer_convention(lun: int, sam: str) -> None:
    assert lun_to_sam(lun).hex() == sam
    assert lun_from_sam(bytes.fromhex(sam)) == lun


def test_lun_groups() -> None:
    assert parse_lun_groups("") == bytes(8)
    assert parse_lun_groups("1").hex() == "0001000000000000"
    assert format_lun_groups(bytes.fromhex("47523a4f6b7e2f99")) == "4752-3a4f-6b7e-2f99"
    assert format_lun_groups(bytes(8)) == "0"
    with pytest.raises(ValueError):
        lun_to_sam(-1)
    with pytest.raises(ValueError):
        lun_from_sam(b"\0")


def test_target_spec_validation() -> None:
    with pytest.raises(ConfigError) as info:
        TargetSpec(host="h", name="iqn.x", reverse_chap=ChapCredentials("t", "s"))
    assert info.value.path == "reverse_chap"
    with pytest.raises(ConfigError):
        TargetSpec(host="h", name="")
    with pytest.raises(ConfigError):
        TargetSpec(host="h h", name="iqn.x")
    with pytest.raises(ConfigError):
        ChapCredentials("", "s")
    assert "sesame" not in repr(ChapCredentials("joe", "sesame"))
    assert TargetSpec(host="[2001:DB8::1]", name="iqn.x").host == "2001:db8::1"
