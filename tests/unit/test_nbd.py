"""The sans-IO NBD server core (bootinit.nbd) against hand-written protocol bytes.

Expected bytes are spelled out from proto.md (github.com/NetworkBlockDevice/nbd
doc/proto.md), not produced with the module's own structs.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bootinit.nbd import (
    BadClientFlags,
    BadMagic,
    Disconnect,
    Errno,
    FlushRequest,
    InvalidFlags,
    InvalidRequest,
    NbdExport,
    NbdServerProtocol,
    Negotiated,
    OptionRefused,
    OutOfRangeRequest,
    OversizedOption,
    OversizedRequest,
    ProtocolFailed,
    ReadOnlyExport,
    ReadRequest,
    Rep,
    RequestRejected,
    State,
    TrimRequest,
    UnalignedRequest,
    UnknownExportName,
    UnsupportedCommand,
    WriteRequest,
)

MiB = 1 << 20
OPT_MAGIC = b"IHAVEOPT"
REP_MAGIC = bytes.fromhex("0003e889045565a9")
REQ_MAGIC = bytes.fromhex("25609513")
SIMPLE_MAGIC = bytes.fromhex("67446698")
SIZE = 8 * MiB


def opt(code: int, data: bytes = b"") -> bytes:
    return OPT_MAGIC + struct.pack(">II", code, len(data)) + data


def go_data(name: bytes = b"", infos: tuple[int, ...] = (3,)) -> bytes:
    return struct.pack(">I", len(name)) + name + struct.pack(">H", len(infos)) + \
        b"".join(struct.pack(">H", i) for i in infos)


def req(typ: int, handle: int, offset: int = 0, length: int = 0, flags: int = 0,
        payload: bytes = b"") -> bytes:
    return REQ_MAGIC + struct.pack(">HHQQI", flags, typ, handle, offset, length) + payload


def rep(option: int, rtype: int, data: bytes = b"") -> bytes:
    return REP_MAGIC + struct.pack(">III", option, rtype, len(data)) + data


def simple(handle: int, error: int = 0, data: bytes = b"") -> bytes:
    return SIMPLE_MAGIC + struct.pack(">IQ", error, handle) + data


def connected(**kw: object) -> NbdServerProtocol:
    """A protocol past NBD_OPT_GO with output drained."""
    ex = NbdExport(size=kw.pop("size", SIZE), **kw)  # type: ignore[arg-type]
    p = NbdServerProtocol(ex)
    p.data_to_send()
    evs = p.receive(b"\x00\x00\x00\x03" + opt(7, go_data()))
    assert isinstance(evs[-1], Negotiated)
    p.data_to_send()
    return p


# ------------------------------------------------------------------------ handshake


def test_greeting_is_nbdmagic_ihaveopt_and_fixed_newstyle_no_zeroes() -> None:
    p = NbdServerProtocol(NbdExport(size=SIZE))
    assert p.data_to_send() == b"NBDMAGIC" + b"IHAVEOPT" + b"\x00\x03"
    assert p.data_to_send() == b""
    assert p.state is State.CLIENT_FLAGS


def test_go_exact_reply_bytes() -> None:
    p = NbdServerProtocol(NbdExport(size=SIZE, name="disk"))
    p.data_to_send()
    evs = p.receive(b"\x00\x00\x00\x01" + opt(7, go_data(b"disk", (3, 1))))
    out = p.data_to_send()
    flags = 0x0001 | 0x0004 | 0x0008 | 0x0100  # HAS_FLAGS SEND_FLUSH SEND_FUA MULTI_CONN
    expected = (rep(7, 3, b"\x00\x00" + struct.pack(">Q", SIZE) + struct.pack(">H", flags))
                + rep(7, 3, b"\x00\x01disk")
                + rep(7, 3, b"\x00\x03" + struct.pack(">III", 512, 4096, 32 * MiB))
                + rep(7, 1))
    assert out == expected
    assert len(evs) == 1 and isinstance(evs[0], Negotiated) and not evs[0].no_zeroes
    assert p.state is State.TRANSMISSION


def test_info_does_not_enter_transmission_and_block_size_is_sent_unasked() -> None:
    p = NbdServerProtocol(NbdExport(size=SIZE, block_size=4096, preferred_block_size=4096,
                                    max_payload=MiB, trim=True, fua=False))
    p.data_to_send()
    assert p.receive(b"\x00\x00\x00\x03" + opt(6, go_data(b"", ()))) == []
    out = p.data_to_send()
    flags = 0x0001 | 0x0004 | 0x0020 | 0x0100  # HAS_FLAGS SEND_FLUSH SEND_TRIM MULTI_CONN
    assert out == (rep(6, 3, b"\x00\x00" + struct.pack(">QH", SIZE, flags))
                   + rep(6, 3, b"\x00\x03" + struct.pack(">III", 4096, 4096, MiB))
                   + rep(6, 1))
    assert p.state is State.OPTIONS


@pytest.mark.parametrize("client_flags,zeroes", [(1, 124), (3, 0), (0, 124)])
def test_export_name_reply_with_and_without_zeroes(client_flags: int, zeroes: int) -> None:
    p = NbdServerProtocol(NbdExport(size=SIZE, read_only=True))
    p.data_to_send()
    evs = p.receive(struct.pack(">I", client_flags) + opt(1, b""))
    assert [type(e) for e in evs] == [Negotiated]
    flags = 0x0001 | 0x0002 | 0x0004 | 0x0008 | 0x0100
    assert p.data_to_send() == struct.pack(">QH", SIZE, flags) + bytes(zeroes)


def test_export_name_unknown_is_a_hard_disconnect() -> None:
    p = NbdServerProtocol(NbdExport(size=SIZE, name="disk"))
    p.data_to_send()
    evs = p.receive(b"\x00\x00\x00\x01" + opt(1, b"other"))
    assert len(evs) == 1 and isinstance(evs[0], ProtocolFailed)
    err = evs[0].error
    assert isinstance(err, UnknownExportName) and err.field == "export name"
    assert err.value == b"other"
    assert p.state is State.CLOSED and p.finished and p.data_to_send() == b""
    assert p.receive(opt(7, go_data())) == []


def test_export_name_too_long_fails_without_buffering() -> None:
    p = NbdServerProtocol(NbdExport(size=SIZE))
    p.data_to_send()
    evs = p.receive(b"\x00\x00\x00\x01" + OPT_MAGIC + struct.pack(">II", 1, 1 << 30))
    assert isinstance(evs[0], ProtocolFailed) and isinstance(evs[0].error, OversizedOption)
    assert evs[0].error.value == 1 << 30


def test_unknown_client_flags_close_the_connection() -> None:
    p = NbdServerProtocol(NbdExport(size=SIZE))
    p.data_to_send()
    evs = p.receive(b"\x00\x00\x00\x05")
    assert isinstance(evs[0], ProtocolFailed)
    err = evs[0].error
    assert isinstance(err, BadClientFlags) and err.field == "client flags" and err.value == 5


def test_bad_option_magic() -> None:
    p = NbdServerProtocol(NbdExport(size=SIZE))
    p.data_to_send()
    evs = p.receive(b"\x00\x00\x00\x01" + b"IHAVEOPS" + struct.pack(">II", 7, 0))
    assert isinstance(evs[0], ProtocolFailed) and isinstance(evs[0].error, BadMagic)
    assert evs[0].error.field == "option magic"
    assert evs[0].error.value == int.from_bytes(b"IHAVEOPS", "big")


def test_go_unknown_name_then_default_name() -> None:
    p = NbdServerProtocol(NbdExport(size=SIZE, name="disk"))
    p.data_to_send()
    evs = p.receive(b"\x00\x00\x00\x01" + opt(7, go_data(b"nope")))
    assert isinstance(evs[0], OptionRefused) and evs[0].reply is Rep.ERR_UNKNOWN
    out = p.data_to_send()
    assert out[:16] == rep(7, 0x80000006)[:16] and b"nope" in out[20:]
    assert p.state is State.OPTIONS
    evs = p.receive(opt(7, go_data(b"")))
    assert isinstance(evs[-1], Negotiated) and p.transmitting


@pytest.mark.parametrize("data", [
    b"\x00\x00",                                      # shorter than 6
    struct.pack(">I", 10) + b"ab" + b"\x00\x00",      # name longer than the data
    go_data(b"", (3,)) + b"\x00",                     # trailing byte
    struct.pack(">I", 2) + b"\xff\xfe" + b"\x00\x00",  # not UTF-8
])
def test_info_go_malformed_data_is_err_invalid(data: bytes) -> None:
    p = NbdServerProtocol(NbdExport(size=SIZE))
    p.data_to_send()
    evs = p.receive(b"\x00\x00\x00\x01" + opt(7, data))
    assert isinstance(evs[0], OptionRefused) and evs[0].reply is Rep.ERR_INVALID
    out = p.data_to_send()
    assert out[8:16] == struct.pack(">II", 7, 0x80000003)
    (length,) = struct.unpack(">I", out[16:20])
    assert length == len(out) - 20 > 0   # an error message for humans
    assert p.state is State.OPTIONS


def test_list_structured_reply_starttls_unknown_and_abort() -> None:
    p = NbdServerProtocol(NbdExport(size=SIZE, name="lun1", description="tgtd LUN"))
    p.data_to_send()
    p.receive(b"\x00\x00\x00\x03" + opt(3))
    assert p.data_to_send() == rep(3, 2, b"\x00\x00\x00\x04lun1tgtd LUN") + rep(3, 1)
    p.receive(opt(3, b"x"))
    assert p.data_to_send()[8:16] == struct.pack(">II", 3, 0x80000003)
    for code in (8, 5, 42, 10):
        evs = p.receive(opt(code))
        assert isinstance(evs[0], OptionRefused) and evs[0].reply is Rep.ERR_UNSUP
        assert p.data_to_send()[8:16] == struct.pack(">II", code, 0x80000001)
    evs = p.receive(opt(2))
    assert evs == [Disconnect("NBD_OPT_ABORT")]
    assert p.data_to_send() == rep(2, 1)
    assert p.finished
    assert p.receive(opt(7, go_data())) == []


def test_oversized_option_is_skipped_then_too_big() -> None:
    p = NbdServerProtocol(NbdExport(size=SIZE))
    p.data_to_send()
    big = 100_000
    p.receive(b"\x00\x00\x00\x01" + OPT_MAGIC + struct.pack(">II", 6, big))
    for _ in range(10):
        p.receive(bytes(big // 10))
        assert len(p._opt_data) == 0   # skipped, never stored
    assert p.data_to_send()[8:16] == struct.pack(">II", 6, 0x80000009)
    evs = p.receive(opt(7, go_data()))
    assert isinstance(evs[-1], Negotiated)


# --------------------------------------------------------------------- transmission


def test_requests_fed_byte_by_byte_give_the_same_events() -> None:
    payload = bytes(range(256)) * 8   # 2048 bytes
    stream = (req(0, 0x1111, 4096, 1024) + req(1, 0x2222, 8192, len(payload), flags=1,
                                                payload=payload)
              + req(3, 0x3333) + req(0, 0x4444, 0, 512))
    whole = connected()
    evs_whole = whole.receive(stream)
    chunked = connected()
    evs: list[object] = []
    for b in stream:
        evs += chunked.receive(bytes([b]))
    assert evs == evs_whole
    assert evs == [ReadRequest(0x1111, 4096, 1024, 0),  # type: ignore[arg-type]
                   WriteRequest(0x2222, 8192, bytearray(payload), True),
                   FlushRequest(0x3333), ReadRequest(0x4444, 0, 512, 0)]  # type: ignore
    assert chunked.outstanding == 4 and chunked.outstanding_bytes == 1024 + 2048 + 512


def test_out_of_order_replies_carry_each_handle() -> None:
    p = connected()
    p.receive(req(0, 1, 0, 512) + req(0, 2, 512, 1024) + req(1, 3, 0, 512, payload=b"w" * 512))
    p.reply_ok(3)
    p.reply_read(2, b"b" * 1024)
    p.reply_read(1, b"a" * 512)
    assert p.data_to_send() == (simple(3) + simple(2, data=b"b" * 1024)
                                + simple(1, data=b"a" * 512))
    assert p.outstanding == 0 and p.outstanding_bytes == 0


def test_reply_validation() -> None:
    p = connected()
    p.receive(req(0, 7, 0, 512) + req(3, 8))
    with pytest.raises(ValueError, match="512"):
        p.reply_read(7, b"x" * 100)
    with pytest.raises(ValueError, match="no outstanding request"):
        p.reply_ok(99)
    with pytest.raises(ValueError, match="not READ"):
        p.reply_read(8, b"")
    with pytest.raises(ValueError, match="errno 2"):
        p.reply_error(7, 2)
    p.reply_error(7, Errno.EIO)
    p.reply_error(8, 5)
    assert p.data_to_send() == simple(7, 5) + simple(8, 5)   # no payload on a read error
    assert p.outstanding == 0


def test_duplicate_handles_in_flight_are_tracked_separately() -> None:
    p = connected()
    p.receive(req(0, 5, 0, 512) + req(0, 5, 512, 1024))
    p.reply_read(5, b"y" * 1024)
    p.reply_read(5, b"x" * 512)
    assert p.outstanding == 0


def test_bad_request_magic_is_fatal_with_field_and_value() -> None:
    p = connected()
    p.receive(req(0, 1, 0, 512))
    evs = p.receive(b"\x25\x60\x95\x14" + bytes(24) + req(0, 2, 0, 512))
    assert len(evs) == 1 and isinstance(evs[0], ProtocolFailed)
    err = evs[0].error
    assert isinstance(err, BadMagic) and err.field == "request magic" and err.value == 0x25609514
    assert p.state is State.CLOSED and p.finished and p.error is err
    p.reply_read(1, bytes(512))          # late completions are harmless
    assert p.data_to_send() == b""


def rejected(p: NbdServerProtocol, data: bytes) -> RequestRejected:
    evs = p.receive(data)
    assert len(evs) == 1 and isinstance(evs[0], RequestRejected), evs
    return evs[0]


def test_unaligned_requests_get_einval() -> None:
    p = connected()
    r = rejected(p, req(0, 0xAB, 100, 512))
    assert isinstance(r.error, UnalignedRequest) and r.error.field == "offset"
    assert r.error.value == 100 and r.error.errno is Errno.EINVAL and r.error.handle == 0xAB
    assert p.data_to_send() == simple(0xAB, 22)
    r = rejected(p, req(1, 0xAC, 512, 100, payload=b"z" * 100))
    assert isinstance(r.error, UnalignedRequest) and r.error.field == "length"
    assert p.data_to_send() == simple(0xAC, 22)
    assert p.outstanding == 0
    # the stream is still in sync
    assert p.receive(req(0, 1, 0, 512)) == [ReadRequest(1, 0, 512, 0)]  # type: ignore[arg-type]


def test_beyond_the_export_read_einval_write_enospc_payload_discarded() -> None:
    p = connected(size=MiB)
    r = rejected(p, req(0, 1, MiB - 512, 1024))
    assert isinstance(r.error, OutOfRangeRequest) and r.error.errno is Errno.EINVAL
    assert r.error.field == "offset+length" and r.error.value == MiB + 512
    evs = p.receive(req(1, 2, MiB, 4096) + b"q" * 1000)
    assert evs == [] and p._discard_left == 3096
    evs = p.receive(b"q" * 3096 + req(3, 3))
    assert isinstance(evs[0], RequestRejected) and evs[0].error.errno is Errno.ENOSPC
    assert evs[1] == FlushRequest(3)
    assert p.data_to_send() == simple(1, 22) + simple(2, 28)


def test_oversized_read_and_write_get_einval_without_buffering() -> None:
    p = connected(size=1 << 30)
    r = rejected(p, req(0, 1, 0, 32 * MiB + 512))
    assert isinstance(r.error, OversizedRequest) and r.error.value == 32 * MiB + 512
    big = 40 * MiB
    assert p.receive(req(1, 2, 0, big)) == []
    chunk = bytes(MiB)
    evs: list[object] = []
    for _ in range(40):
        evs += p.receive(chunk)
        assert p._payload is None    # never collected
    assert len(evs) == 1 and isinstance(evs[0], RequestRejected)
    assert isinstance(evs[0].error, OversizedRequest) and evs[0].error.handle == 2
    assert p.data_to_send() == simple(1, 22) + simple(2, 22)
    # exactly the maximum is fine
    assert p.receive(req(0, 3, 0, 32 * MiB)) == [ReadRequest(3, 0, 32 * MiB, 0)]  # type: ignore


def test_read_only_export_refuses_writes_with_eperm() -> None:
    p = connected(read_only=True)
    r = rejected(p, req(1, 9, 0, 512, payload=bytes(512)))
    assert isinstance(r.error, ReadOnlyExport) and r.error.errno is Errno.EPERM
    assert p.data_to_send() == simple(9, 1)


def test_trim_only_when_advertised() -> None:
    p = connected()
    r = rejected(p, req(4, 1, 0, 4096))
    assert isinstance(r.error, UnsupportedCommand) and r.error.value == 4
    p2 = connected(trim=True)
    # TRIM has no payload, so it may be longer than the maximum payload
    evs = p2.receive(req(4, 2, 0, 4 * MiB, flags=1))
    assert evs == [TrimRequest(2, 0, 4 * MiB, True)]
    p2.reply_ok(2)
    assert p2.data_to_send() == simple(2)


def test_unknown_commands_and_flags_get_einval() -> None:
    p = connected()
    for typ in (5, 6, 7, 8, 99):
        r = rejected(p, req(typ, typ, 0, 512))
        assert isinstance(r.error, UnsupportedCommand) and r.error.field == "type"
    r = rejected(p, req(0, 1, 0, 512, flags=1 << 2))    # DF without structured replies
    assert isinstance(r.error, InvalidFlags) and r.error.value == 4
    r = rejected(p, req(3, 2, 512, 0))
    assert isinstance(r.error, InvalidRequest) and r.error.field == "offset"
    pnofua = connected(fua=False)
    r = rejected(pnofua, req(1, 3, 0, 512, flags=1, payload=bytes(512)))
    assert isinstance(r.error, InvalidFlags)
    assert pnofua.receive(req(0, 4, 0, 512)) == [ReadRequest(4, 0, 512, 0)]  # type: ignore


def test_disc_waits_for_outstanding_replies_and_ignores_later_bytes() -> None:
    p = connected()
    evs = p.receive(req(0, 1, 0, 512) + req(2, 2) + req(0, 3, 0, 512))
    assert evs[1] == Disconnect("NBD_CMD_DISC") and len(evs) == 2
    assert p.state is State.DISCONNECTING and not p.finished
    p.reply_read(1, bytes(512))
    assert p.finished
    assert p.data_to_send() == simple(1, data=bytes(512))


def test_zero_length_read_and_write() -> None:
    p = connected()
    evs = p.receive(req(0, 1, 0, 0) + req(1, 2, 4096, 0))
    assert evs == [ReadRequest(1, 0, 0, 0), WriteRequest(2, 4096, bytearray(), False)]  # type: ignore
    p.reply_read(1, b"")
    p.reply_ok(2)
    assert p.data_to_send() == simple(1) + simple(2)


@pytest.mark.parametrize("kw,field", [
    ({"block_size": 3}, "block_size"), ({"block_size": 1 << 17}, "block_size"),
    ({"preferred_block_size": 256}, "preferred_block_size"),
    ({"max_payload": 1000}, "max_payload"), ({"size": -1}, "size"),
    ({"name": "a\0b"}, "name"), ({"name": "x" * 5000}, "name"),
])
def test_export_validation_names_the_field(kw: dict[str, object], field: str) -> None:
    kw.setdefault("size", SIZE)
    with pytest.raises(ValueError, match=field):
        NbdExport(**kw)  # type: ignore[arg-type]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(min_size=0, max_size=64), max_size=20))
def test_junk_after_the_handshake_never_raises(chunks: list[bytes]) -> None:
    p = connected()
    for c in chunks:
        for ev in p.receive(c):
            if isinstance(ev, ReadRequest):
                p.reply_read(ev.handle, bytes(ev.length))
            elif isinstance(ev, (WriteRequest, FlushRequest, TrimRequest)):
                p.reply_ok(ev.handle)
        p.data_to_send()
    assert p.outstanding == 0


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=0, max_size=400))
def test_junk_during_the_handshake_never_raises(junk: bytes) -> None:
    p = NbdServerProtocol(NbdExport(size=SIZE))
    p.receive(junk)
    p.data_to_send()
