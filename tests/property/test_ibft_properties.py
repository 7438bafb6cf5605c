"""Property tests (hypothesis) for firmware_tables.

- random boot configurations survive BootConfig -> iBFT bytes -> parse -> BootConfig;
- random corruptions and truncations of valid tables never crash the reader: only
  ``IbftError`` escapes (the reader's internal bounds guard, ``BoundsViolation``, would
  escape as a failure), and bytes after the table's declared end are never looked at;
- URLs, root paths and Linux's LUN text survive format -> parse.
"""

from __future__ import annotations

import contextlib
from dataclasses import replace
from ipaddress import IPv4Address, IPv6Address, ip_interface
from pathlib import Path
from typing import cast

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from firmware_tables.acpi import fill_checksum
from firmware_tables.config import BootConfig, NicConfig, PciAddress
from firmware_tables.errors import ConfigError, IbftError, Problem
from firmware_tables.ibft import (
    IPXE_LAYOUT,
    BuildOptions,
    IbftInitiator,
    IbftNic,
    IbftTarget,
    build_ibft,
    parse_ibft,
    render_sysfs,
)
from firmware_tables.ibft.report import format_table, table_to_dict
from firmware_tables.ibft.sysfs import decode_sysfs_lun
from firmware_tables.lun import lun_from_sam, lun_to_sam
from firmware_tables.target import ChapCredentials, TargetSpec
from firmware_tables.uri import (
    format_iscsi_url,
    format_root_path,
    parse_iscsi_url,
    parse_root_path,
)

TESTDATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "testdata" / "ibft"
FAST = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])

# -- strategies ---------------------------------------------------------------------------

ipv4 = st.ip_addresses(v=4).filter(lambda a: int(a) != 0)
# v=6 draws only IPv6Address; ip_addresses() is typed for both versions
ipv6 = cast("st.SearchStrategy[IPv6Address]", st.ip_addresses(v=6)).filter(
    lambda a: int(a) != 0 and a.ipv4_mapped is None)
any_ip = st.one_of(ipv4, ipv6)
text = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\0"),
               max_size=24)
nonempty = text.filter(bool)


@st.composite
def nic_configs(draw: st.DrawFn) -> NicConfig:
    family = draw(st.sampled_from([ipv4, ipv6]))
    address = None
    if draw(st.booleans()):
        ip = draw(family)
        prefix = draw(st.integers(0, 32 if isinstance(ip, IPv4Address) else 128))
        address = ip_interface((ip, prefix))
    pci = draw(st.tuples(st.integers(0, 255), st.integers(0, 31), st.integers(0, 7)))
    return NicConfig(
        address=address,
        gateway=draw(st.none() | family),
        dns=tuple(draw(st.lists(any_ip, max_size=2))),
        mac=draw(st.none() | st.binary(min_size=6, max_size=6).filter(any)),
        vlan=draw(st.integers(0, 4095)),
        dhcp=draw(st.booleans()),
        dhcp_server=draw(st.none() | any_ip),
        hostname=draw(st.none() | text),
        pci=PciAddress(*pci) if any(pci) and draw(st.booleans()) else None,
        boot_selected=draw(st.booleans()),
    )


def credentials() -> st.SearchStrategy[ChapCredentials]:
    return st.builds(ChapCredentials, nonempty, text)


@st.composite
def target_specs(draw: st.DrawFn, n_nics: int) -> TargetSpec:
    chap = draw(st.none() | credentials())
    return TargetSpec(
        host=str(draw(any_ip)),
        name=draw(nonempty),
        port=draw(st.integers(1, 0xFFFF)),
        lun=draw(st.integers(0, (1 << 64) - 1)),
        chap=chap,
        reverse_chap=draw(st.none() | credentials()) if chap else None,
        nic=draw(st.integers(0, n_nics - 1)),
        boot_selected=draw(st.booleans()),
    )


@st.composite
def boot_configs(draw: st.DrawFn) -> BootConfig:
    nics = draw(st.lists(nic_configs(), min_size=1, max_size=5))
    targets = draw(st.lists(target_specs(len(nics)), max_size=5))
    return BootConfig(
        initiator_name=draw(nonempty),
        nics=tuple(nics),
        targets=tuple(targets),
        isns_server=draw(st.none() | any_ip),
        slp_server=draw(st.none() | any_ip),
        radius_servers=tuple(draw(st.lists(any_ip, max_size=2))),
    )


# -- round trips ----------------------------------------------------------------------------


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(boot_configs(), st.booleans())
def test_boot_config_round_trips(config: BootConfig, ipxe: bool) -> None:
    data = config.to_ibft(IPXE_LAYOUT if ipxe else BuildOptions())
    table = parse_ibft(data, exact_length=True)
    assert table.problems == ()
    assert BootConfig.from_ibft(table) == config
    assert len(table.nics) == len(config.nics) and len(table.targets) == len(config.targets)
    # the file format round-trips too
    assert BootConfig.from_dict(config.to_dict(show_secrets=True)) == config
    # and Linux's view shows each structure under its index
    rendered = render_sysfs(table)
    assert {f"ethernet{i}" for i in range(len(config.nics))} <= rendered.keys()
    for i, tgt in enumerate(config.targets):
        assert rendered[f"target{i}"]["port"] == f"{tgt.port}\n"


# -- corruption -------------------------------------------------------------------------------


def _bases() -> list[bytes]:
    nics = [IbftNic(index=i, ip_address=IPv4Address(f"10.{i}.0.2"), prefix_length=24,
                    hostname=f"h{i}") for i in range(3)]
    targets = [IbftTarget(index=i, ip_address=IPv6Address(f"2001:db8::{i + 1}"),
                          name=f"iqn.x:{i}", nic_association=i, chap_type=i,
                          chap_name="u" if i else None, chap_secret="s" * 12 if i else None,
                          reverse_chap_name="t" if i == 2 else None,
                          reverse_chap_secret="r" * 12 if i == 2 else None)
               for i in range(3)]
    out = [build_ibft(IbftInitiator(name="iqn.x:client"), nics, targets),
           build_ibft(IbftInitiator(name="iqn.x"), nics[:1], targets[:1], IPXE_LAYOUT)]
    for name in ("dracut-ng_TEST-70-ISCSI_ibft.table", "lkml_rintel_3nic3tgt.bin",
                 "fwts_ibft_0001.bin"):
        path = TESTDATA / name
        if path.is_file():
            out.append(path.read_bytes())
    return out


BASES = _bases()


@st.composite
def corrupted_tables(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(BASES)))
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.sampled_from(["byte", "u16", "u32", "truncate", "extend"]))
        if kind == "truncate":
            del data[draw(st.integers(0, len(data))):]
        elif kind == "extend":
            data += draw(st.binary(max_size=64))
        elif data:
            size = {"byte": 1, "u16": 2, "u32": 4}[kind]
            at = draw(st.integers(0, max(0, len(data) - size)))
            value = draw(st.sampled_from([0, 1, 0xFF, 0xFFFF, 0x30, 0x48, 0x98, 0x100])
                         | st.integers(0, (1 << (8 * size)) - 1))
            data[at : at + size] = (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little")[
                : len(data) - at]
    if len(data) >= 48 and draw(st.booleans()):
        length = int.from_bytes(data[4:8], "little")
        if length <= len(data):
            table = bytearray(data[:length]) if length >= 10 else data
            fill_checksum(table)
            data[: len(table)] = table
    return bytes(data)


def _parse_everything(data: bytes) -> None:
    try:
        table = parse_ibft(data, strict=False)
    except IbftError as exc:
        assert len(data) < 48
        assert exc.problems and exc.field == "length"
        return
    for p in table.problems:
        assert isinstance(p, Problem) and str(p)
        assert p.offset is None or 0 <= p.offset <= max(len(data), 0x10000)
    try:
        strict = parse_ibft(data)
    except IbftError as exc:
        assert exc.problems == table.problems and table.problems
    else:
        assert strict == table and not table.problems
    # everything downstream of a lenient parse copes too
    format_table(table)
    table_to_dict(table)
    render_sysfs(table)
    with contextlib.suppress(ConfigError):
        BootConfig.from_ibft(table)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(corrupted_tables())
def test_corrupted_tables_never_crash(data: bytes) -> None:
    _parse_everything(data)


@FAST
@given(st.binary(max_size=400), st.booleans())
def test_random_bytes_never_crash(noise: bytes, with_signature: bool) -> None:
    _parse_everything((b"iBFT" + noise[4:]) if with_signature else noise)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(corrupted_tables(), st.binary(min_size=1, max_size=128))
def test_nothing_after_the_declared_end_is_read(data: bytes, tail: bytes) -> None:
    assume(len(data) >= 48)
    declared = int.from_bytes(data[4:8], "little")
    assume(declared <= len(data))
    assert parse_ibft(data + tail, strict=False) == parse_ibft(data, strict=False)


@FAST
@given(st.sampled_from(BASES), st.data())
def test_every_truncation_is_reported(base: bytes, data: st.DataObject) -> None:
    cut = data.draw(st.integers(0, len(base) - 1))
    with pytest.raises(IbftError):
        parse_ibft(base[:cut])


# -- locators and LUNs ----------------------------------------------------------------------

hostnames = st.from_regex(r"[a-z]([a-z0-9-]{0,18}[a-z0-9])?(\.[a-z]([a-z0-9-]{0,8}[a-z0-9])?){0,3}",
                          fullmatch=True)
url_user = st.text(st.characters(blacklist_categories=("Cs", "Cc"),
                                 blacklist_characters="%:@/?#\0"), min_size=1, max_size=16)
url_secret = st.text(st.characters(blacklist_categories=("Cs", "Cc"),
                                   blacklist_characters="@/?#\0"), min_size=1, max_size=16)


@FAST
@given(st.one_of(any_ip.map(str), hostnames), nonempty, st.integers(1, 0xFFFF),
       st.integers(0, (1 << 64) - 1), st.none() | st.builds(ChapCredentials, url_user, url_secret))
def test_url_round_trip(host: str, name: str, port: int, lun: int,
                        chap: ChapCredentials | None) -> None:
    spec = TargetSpec(host=host, name=name, port=port, lun=lun, chap=chap)
    assert parse_iscsi_url(format_iscsi_url(spec, show_secret=True)) == spec
    masked = format_iscsi_url(spec)
    if chap is not None:
        assert "%***@" in masked
        assert parse_iscsi_url(masked) == replace(spec, chap=ChapCredentials(chap.user, "***"))


@FAST
@given(st.one_of(any_ip.map(str), hostnames), nonempty, st.integers(1, 0xFFFF),
       st.integers(0, (1 << 64) - 1))
def test_root_path_round_trip(host: str, name: str, port: int, lun: int) -> None:
    spec = TargetSpec(host=host, name=name, port=port, lun=lun)
    assert parse_root_path(format_root_path(spec)) == spec


@FAST
@given(st.integers(0, (1 << 64) - 1))
def test_lun_forms_are_inverse(lun: int) -> None:
    assert lun_from_sam(lun_to_sam(lun)) == lun


@FAST
@given(st.binary(min_size=8, max_size=8))
def test_sysfs_lun_text_decodes_to_a_consistent_reading(lun: bytes) -> None:
    shown = "".join(f"{b:x}" for b in lun)
    decoded = decode_sysfs_lun(shown)
    assert decoded is not None
    assert "".join(f"{b:x}" for b in decoded) == shown


@FAST
@given(st.one_of(st.just(0), st.integers(16, 255)), st.integers(0, 255))
def test_sysfs_lun_single_level_decodes_exactly(b0: int, b1: int) -> None:
    lun = bytes([b0, b1]) + bytes(6)
    assert decode_sysfs_lun("".join(f"{b:x}" for b in lun)) == lun
