"""Hypothesis: garbage in raises only our typed errors; encode/decode round-trips."""

from __future__ import annotations

import contextlib

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bootinit.iscsi import pdu as P
from bootinit.iscsi.chap import ChapCredentials, ChapInitiator, Secret, decode_binary
from bootinit.iscsi.errors import IscsiError, KeyFormatError
from bootinit.iscsi.keys import Negotiator, OperationalConfig, TextAssembler, decode_text
from bootinit.iscsi.login import LoginConfig, LoginMachine
from bootinit.iscsi.parser import PduParser
from bootinit.iscsi.text import parse_portal, parse_send_targets
from bootinit.scsi.sense import SenseFormatError, decode_sense

FAST = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(st.binary(max_size=600), st.booleans(), st.booleans(),
       st.lists(st.integers(1, 64), max_size=20))
def test_parser_random_bytes(data: bytes, hd: bool, dd: bool, cuts: list[int]) -> None:
    parser = PduParser(header_digest=hd, data_digest=dd, pause_after_login=False)
    parser.place(0, bytearray(64))
    pos = 0
    try:
        for n in [*cuts, len(data)]:
            parser.feed(data[pos:pos + n])
            pos += n
    except IscsiError:
        pass


@FAST
@given(st.binary(min_size=48, max_size=48), st.binary(max_size=300))
def test_parser_random_headers_with_valid_lengths(bhs: bytes, tail: bytes) -> None:
    # Make the lengths plausible so decoding of every opcode gets exercised.
    h = bytearray(bhs)
    h[4] = min(h[4], 2)
    dsl = min(int.from_bytes(h[5:8], "big"), 64)
    h[5:8] = dsl.to_bytes(3, "big")
    parser = PduParser()
    try:
        for item in parser.feed(bytes(h) + tail):
            if isinstance(item, P.ScsiResponse):
                _ = item.sense
    except IscsiError:
        pass


@FAST
@given(st.binary(max_size=400))
def test_decode_text_random(data: bytes) -> None:
    try:
        pairs = decode_text(data)
    except KeyFormatError:
        return
    for k, v in pairs:
        assert len(k) <= 63 and "\0" not in v


@FAST
@given(st.lists(st.tuples(st.sampled_from(["TargetName", "TargetAddress", "X", "TargetAlias"]),
                          st.text(max_size=40)), max_size=10))
def test_send_targets_random(pairs: list[tuple[str, str]]) -> None:
    with contextlib.suppress(KeyFormatError):
        parse_send_targets(pairs)


@FAST
@given(st.text(max_size=60))
def test_portal_random(text: str) -> None:
    with contextlib.suppress(KeyFormatError):
        parse_portal(text)


@FAST
@given(st.lists(st.tuples(st.sampled_from(
    ["HeaderDigest", "DataDigest", "MaxBurstLength", "FirstBurstLength", "InitialR2T",
     "ImmediateData", "MaxRecvDataSegmentLength", "ErrorRecoveryLevel", "DefaultTime2Wait",
     "TargetPortalGroupTag", "X-foo", "MaxConnections", "TaskReporting"]),
    st.sampled_from(["Yes", "No", "None", "CRC32C", "0", "1", "512", "65536", "99999999",
                     "Reject", "Irrelevant", "NotUnderstood", "0x200", "junk", ""])),
    max_size=12), st.booleans())
def test_negotiation_random(pairs: list[tuple[str, str]], offer: bool) -> None:
    n = Negotiator(OperationalConfig(header_digest=("CRC32C", "None")))
    if offer:
        n.offer()
    try:
        n.receive(pairs)
        n.result()
    except IscsiError:
        pass


@FAST
@given(st.text(max_size=80))
def test_chap_binary_random(value: str) -> None:
    with contextlib.suppress(KeyFormatError):
        decode_binary("CHAP_C", value)


@FAST
@given(st.dictionaries(st.sampled_from(["CHAP_A", "CHAP_I", "CHAP_C", "CHAP_N", "CHAP_R"]),
                       st.text(max_size=40), max_size=5))
def test_chap_random_target(keys: dict[str, str]) -> None:
    c = ChapInitiator(ChapCredentials("u", Secret("s-1"), target_secret=Secret("t-2")))
    try:
        c.respond(keys)
        c.verify(keys)
    except IscsiError:
        pass


@FAST
@given(st.lists(st.tuples(st.booleans(), st.booleans(), st.integers(0, 3), st.integers(0, 3),
                          st.integers(0, 0x0303), st.binary(max_size=80)), max_size=6))
def test_login_random_responses(
    steps: list[tuple[bool, bool, int, int, int, bytes]],
) -> None:
    m = LoginMachine(LoginConfig(initiator_name="iqn.x:i", target_name="iqn.x:t",
                                 chap=ChapCredentials("u", Secret("s-1")), require_auth=False))
    m.start()
    try:
        for transit, cont, csg, nsg, status, data in steps:
            m.receive(P.LoginResponse(transit=transit, cont=cont and not transit, csg=csg,
                                      nsg=nsg, isid=m.isid, tsih=1, status_class=status >> 8,
                                      status_detail=status & 0xFF, data=data))
    except IscsiError:
        pass


@FAST
@given(st.binary(max_size=40))
def test_sense_random(data: bytes) -> None:
    with contextlib.suppress(SenseFormatError):
        decode_sense(data)


@FAST
@given(st.binary(max_size=200), st.booleans())
def test_text_assembler_random(data: bytes, cont: bool) -> None:
    with contextlib.suppress(KeyFormatError):
        TextAssembler(limit=150).add(data, cont)


u32 = st.integers(0, 0xFFFFFFFF)


@FAST
@given(st.sampled_from(list(P.PDU_CLASSES.values())), u32, u32, u32, st.binary(max_size=40),
       st.booleans(), st.booleans())
def test_roundtrip_random_fields(cls: type[P.Pdu], a: int, b: int, c: int, data: bytes,
                                 hd: bool, dd: bool) -> None:
    kw: dict[str, object] = {}
    fields = set(cls.__dataclass_fields__)
    for name, value in (("itt", a), ("cmdsn", b), ("statsn", b), ("exp_statsn", c),
                        ("max_cmdsn", c), ("buffer_offset", a), ("datasn", c)):
        if name in fields:
            kw[name] = value
    if cls is P.ScsiCommand:
        kw["cdb"] = (data + bytes(16))[:16]
    if cls is P.R2T:
        kw["ttt"] = 5
    else:
        kw["data"] = data
    p = cls(**kw)  # type: ignore[arg-type]
    assert P.decode_bytes(P.encode_bytes(p, header_digest=hd, data_digest=dd),
                          header_digest=hd, data_digest=dd) == p
