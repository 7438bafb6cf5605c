"""The resumable receive parser: chunking, placement, digests, limits."""

from __future__ import annotations

import random

import pytest

from bootinit.iscsi import pdu as P
from bootinit.iscsi.errors import (
    DataDigestError,
    DataSegmentTooLong,
    HeaderDigestError,
    PduFormatError,
    PlacementError,
    ProtocolError,
)
from bootinit.iscsi.parser import PduParser


def stream(digests: bool = False) -> tuple[bytes, list[P.Pdu]]:
    pdus: list[P.Pdu] = [
        P.NopIn(itt=1, ttt=0xFFFFFFFF, statsn=1, exp_cmdsn=2, max_cmdsn=3, data=b"abc"),
        P.DataIn(itt=7, datasn=0, buffer_offset=0, data=bytes(range(256)) * 4),
        P.DataIn(itt=7, datasn=1, buffer_offset=1024, data=b"\x5a" * 1023),
        P.DataIn(itt=7, final=True, status_present=True, datasn=2, buffer_offset=2047,
                 data=b"Z"),
        P.ScsiResponse(itt=8, status=0, statsn=2, exp_cmdsn=3, max_cmdsn=10),
        P.R2T(itt=9, ttt=3, desired_length=4096),
        P.ScsiCommand(cdb=bytes(range(40)), itt=3, bidi_read_length=77),
    ]
    wire = b"".join(P.encode_bytes(p, header_digest=digests, data_digest=digests) for p in pdus)
    return wire, pdus


def feed_chunks(parser: PduParser, wire: bytes, sizes: list[int]) -> list[object]:
    out: list[object] = []
    pos = 0
    for n in sizes:
        out += parser.feed(wire[pos:pos + n])
        pos += n
    out += parser.feed(wire[pos:])
    return out


@pytest.mark.parametrize("digests", [False, True])
def test_one_byte_at_a_time(digests: bool) -> None:
    wire, pdus = stream(digests)
    parser = PduParser(header_digest=digests, data_digest=digests)
    out = feed_chunks(parser, wire, [1] * len(wire))
    assert out == pdus
    assert parser.pending() == 0


@pytest.mark.parametrize("seed", range(20))
def test_random_chunks(seed: int) -> None:
    rng = random.Random(seed)
    digests = bool(seed & 1)
    wire, pdus = stream(digests)
    parser = PduParser(header_digest=digests, data_digest=digests)
    sizes = []
    total = 0
    while total < len(wire):
        n = rng.choice([0, 1, 2, 3, 5, 47, 48, 49, 51, 200, 1000, 5000])
        sizes.append(n)
        total += n
    assert feed_chunks(parser, wire, sizes) == pdus


def test_whole_stream_at_once_memoryview() -> None:
    wire, pdus = stream()
    parser = PduParser()
    assert parser.feed(memoryview(bytearray(wire))) == pdus


@pytest.mark.parametrize("chunk", [1, 7, 100, 10_000])
def test_data_in_placement(chunk: int) -> None:
    wire, _ = stream(digests=True)
    dest = bytearray(2048)
    parser = PduParser(header_digest=True, data_digest=True)
    parser.place(7, dest)
    out = feed_chunks(parser, wire, [chunk] * (len(wire) // chunk))
    data_ins = [p for p in out if isinstance(p, P.DataIn)]
    assert len(data_ins) == 3
    assert all(p.placed and p.data == b"" for p in data_ins)
    assert [p.segment_length for p in data_ins] == [1024, 1023, 1]
    assert dest == bytes(range(256)) * 4 + b"\x5a" * 1023 + b"Z"
    parser.unplace(7)


def test_unplaced_data_in_keeps_its_data() -> None:
    parser = PduParser()
    parser.place(99, bytearray(10))  # another task
    p = P.DataIn(itt=7, data=b"hello")
    (out,) = parser.feed(P.encode_bytes(p))
    assert isinstance(out, P.DataIn) and bytes(out.data) == b"hello" and not out.placed


@pytest.mark.parametrize("digests", [False, True])
@pytest.mark.parametrize("status_pdu", ["data_in", "scsi_response"])
def test_status_forgets_the_placement_at_once(digests: bool, status_pdu: str) -> None:
    """RFC 7143 §11.7.4: the PDU with the task's status ends it; a stray Data-In for the
    same ITT parsed after it (in the same feed) must not write into the buffer."""
    last: P.Pdu
    if status_pdu == "data_in":
        last = P.DataIn(itt=7, final=True, status_present=True, datasn=1, buffer_offset=4,
                        data=b"EFGH")
    else:
        last = P.ScsiResponse(itt=7, status=0, statsn=2, exp_cmdsn=3, max_cmdsn=10)
    pdus: list[P.Pdu] = [P.DataIn(itt=7, datasn=0, buffer_offset=0, data=b"ABCD"), last,
                         P.DataIn(itt=7, datasn=2, buffer_offset=0, data=b"xxxx")]
    wire = b"".join(P.encode_bytes(p, header_digest=digests, data_digest=digests)
                    for p in pdus)
    dest = bytearray(8)
    parser = PduParser(header_digest=digests, data_digest=digests)
    parser.place(7, dest)
    out = parser.feed(wire)
    assert len(out) == 3
    first, _, stray = out
    assert isinstance(first, P.DataIn) and first.placed
    assert isinstance(stray, P.DataIn) and not stray.placed and bytes(stray.data) == b"xxxx"
    assert bytes(dest) == (b"ABCDEFGH" if status_pdu == "data_in" else b"ABCD\0\0\0\0")
    parser.place(8, bytearray(4))  # other placements are kept
    parser.feed(P.encode_bytes(P.ScsiResponse(itt=7, status=0, statsn=3), header_digest=digests,
                               data_digest=digests))
    (again,) = parser.feed(P.encode_bytes(P.DataIn(itt=8, datasn=0, data=b"1234"),
                                          header_digest=digests, data_digest=digests))
    assert isinstance(again, P.DataIn) and again.placed


def test_placement_outside_buffer_is_fatal() -> None:
    parser = PduParser()
    parser.place(7, bytearray(100))
    with pytest.raises(PlacementError, match="ITT 0x00000007"):
        parser.feed(P.encode_bytes(P.DataIn(itt=7, buffer_offset=98, data=b"abc")))
    with pytest.raises(ProtocolError):
        parser.feed(b"\0")


def test_readonly_placement_refused() -> None:
    with pytest.raises(ValueError):
        PduParser().place(1, memoryview(b"abc"))


def test_header_digest_error_is_fatal() -> None:
    w = bytearray(P.encode_bytes(P.NopIn(itt=1), header_digest=True))
    w[20] ^= 1
    parser = PduParser(header_digest=True)
    with pytest.raises(HeaderDigestError) as ei:
        parser.feed(bytes(w))
    assert ei.value.fatal and ei.value.kind == "header"
    assert parser.broken is ei.value


def test_data_digest_error_is_reported_and_parsing_goes_on() -> None:
    a = bytearray(P.encode_bytes(P.DataIn(itt=7, data=b"payload!"), header_digest=True,
                                 data_digest=True))
    a[52] ^= 0xFF  # first data byte (after 48 + 4 digest)
    b = P.encode_bytes(P.NopIn(itt=2), header_digest=True, data_digest=True)
    parser = PduParser(header_digest=True, data_digest=True)
    out = parser.feed(bytes(a) + b)
    assert len(out) == 2
    err = out[0]
    assert isinstance(err, DataDigestError) and not err.fatal and err.kind == "data"
    assert isinstance(err.pdu, P.DataIn) and err.pdu.itt == 7
    assert isinstance(out[1], P.NopIn)


def test_data_digest_covers_padding() -> None:
    w = bytearray(P.encode_bytes(P.NopIn(data=b"abcde"), data_digest=True))
    w[48 + 6] ^= 1  # a padding byte
    (out,) = PduParser(data_digest=True).feed(bytes(w))
    assert isinstance(out, DataDigestError)


def test_no_data_digest_without_data() -> None:
    w = P.encode_bytes(P.NopIn(), header_digest=True, data_digest=True)
    assert len(w) == 52
    assert len(PduParser(header_digest=True, data_digest=True).feed(w)) == 1


def test_data_segment_too_long() -> None:
    parser = PduParser(max_recv_data_segment_length=512)
    w = P.encode_bytes(P.NopIn(data=bytes(513)))
    with pytest.raises(DataSegmentTooLong) as ei:
        parser.feed(w[:48])  # raised as soon as the header is known
    assert ei.value.length == 513 and ei.value.limit == 512
    assert "DataSegmentLength=513" in str(ei.value)


def test_limit_is_configurable() -> None:
    parser = PduParser(max_recv_data_segment_length=512)
    parser.max_recv_data_segment_length = 1024
    assert len(parser.feed(P.encode_bytes(P.NopIn(data=bytes(1024))))) == 1
    with pytest.raises(ValueError):
        parser.max_recv_data_segment_length = 0


def test_unexpected_opcode() -> None:
    parser = PduParser(accept_opcodes=P.TARGET_OPCODES)
    with pytest.raises(PduFormatError, match="Opcode"):
        parser.feed(P.encode_bytes(P.NopOut()))


def test_pause_after_final_login_response_then_digests() -> None:
    login = P.LoginResponse(transit=True, csg=1, nsg=3, tsih=1, data=b"HeaderDigest=CRC32C\0")
    nop = P.NopIn(itt=3, data=b"x")
    wire = P.encode_bytes(login) + P.encode_bytes(nop, header_digest=True, data_digest=True)
    parser = PduParser()
    out = parser.feed(wire)
    assert out == [login]
    assert parser.pending() > 0
    parser.set_digests(True, True)
    assert parser.feed(b"") == [nop]


def test_set_digests_mid_pdu_refused() -> None:
    parser = PduParser()
    parser.feed(bytes(10))
    with pytest.raises(ProtocolError):
        parser.set_digests(True, False)


def test_ahs_on_target_pdu_is_skipped() -> None:
    # A target PDU with an (unknown) AHS still parses.
    w = bytearray(P.encode_bytes(P.NopIn(itt=5, data=b"ab")))
    w[4] = 1
    w[48:48] = b"\x00\x01\x09\x00"
    (out,) = PduParser().feed(bytes(w))
    assert isinstance(out, P.NopIn) and out.itt == 5 and bytes(out.data) == b"ab"
