"""Fuzz targets: one function per input parser, each taking arbitrary bytes.

A target returns normally for every input the code under test handles correctly:
accepted, or refused with the module's typed error (caught here), or — for frames — a
counted drop. Anything else escapes: an unexpected exception type, a broken invariant
(``AssertionError``: memory held beyond its bound, a write outside the caller's buffer,
an interface that raised), and the fuzzer reports it with the input. Hangs and
unbounded allocation are caught by the runner's per-input time and RSS limits
(:mod:`fuzz.run`).

The same functions run under hypothesis (``tests/reliability/test_fuzz_properties.py``)
and under atheris, coverage-guided (``python -m fuzz.run``). Seed corpora are in
``fuzz/corpus/<target>/`` (made by ``python -m fuzz.make_corpus`` from a capture of a
real tgtd session).

Targets: ``pdu_parser``, ``text_keys``, ``login``, ``session``, ``frames``, ``ibft``,
``nbd``.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import random
import struct
from collections.abc import Callable

# --------------------------------------------------------------------- helpers


class Reader:
    """Consume fuzz bytes as small integers and slices (never raises; zeros past the end)."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    @property
    def left(self) -> int:
        return len(self.data) - self.pos

    def u8(self) -> int:
        if self.pos >= len(self.data):
            return 0
        self.pos += 1
        return self.data[self.pos - 1]

    def uint(self, n: int) -> int:
        return int.from_bytes(self.take(n).ljust(n, b"\0"), "big")

    def sint(self, n: int) -> int:
        return int.from_bytes(self.take(n).ljust(n, b"\0"), "big", signed=True)

    def take(self, n: int) -> bytes:
        out = self.data[self.pos:self.pos + max(n, 0)]
        self.pos += len(out)
        return out

    def rest(self) -> bytes:
        return self.take(self.left)


def chunks(data: bytes, size_seed: int) -> list[bytes]:
    """Cut ``data`` into pieces of varying size (1..~1500) drawn from ``size_seed``."""
    rng = random.Random(size_seed)
    out = []
    pos = 0
    top = 1 + (size_seed * 37) % 1500
    while pos < len(data):
        n = rng.randint(1, top)
        out.append(data[pos:pos + n])
        pos += n
    return out


GUARD = 64
GUARD_BYTE = 0xA5


class GuardedBuffer:
    """A destination buffer with guard zones before and after it."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.raw = bytearray([GUARD_BYTE]) * GUARD + bytearray(size) + \
            bytearray([GUARD_BYTE]) * GUARD
        self.view = memoryview(self.raw)[GUARD:GUARD + size]

    def intact(self) -> bool:
        """Nothing was written outside ``view``."""
        g = bytes([GUARD_BYTE]) * GUARD
        return self.raw[:GUARD] == g and self.raw[GUARD + self.size:] == g


# ------------------------------------------------------------------ pdu_parser

PARSER_MRDSL = 16384


def pdu_parser(data: bytes) -> None:
    """The iSCSI receive parser on a target->initiator byte stream.

    Byte 0: bit 0 HeaderDigest, bit 1 DataDigest (switched on after a final Login
    Response, or at once with bit 2), bits 3-7 the chunking. Then the stream. Data-In
    for ITTs 1 and 2 is placed into guarded buffers.
    """
    from bootinit.iscsi.errors import IscsiError, ProtocolError
    from bootinit.iscsi.parser import PduParser
    from bootinit.iscsi.pdu import TARGET_OPCODES, LoginResponse, Stage

    if not data:
        return
    flags = data[0]
    hd, dd, now = bool(flags & 1), bool(flags & 2), bool(flags & 4)
    p = PduParser(max_recv_data_segment_length=PARSER_MRDSL, accept_opcodes=TARGET_OPCODES)
    if now:
        p.set_digests(hd, dd)
    bufs = {1: GuardedBuffer(4096), 2: GuardedBuffer(512)}
    for itt, b in bufs.items():
        p.place(itt, b.view)
    limit = 48 + 255 * 4 + 4 + PARSER_MRDSL + 3 + 4
    try:
        for piece in chunks(data[1:], flags >> 3):
            for item in p.feed(piece):
                if (isinstance(item, LoginResponse) and item.transit
                        and item.nsg == Stage.FULL_FEATURE and item.status_class == 0):
                    p.set_digests(hd, dd)
            # held input after a login pause is at most one chunk
            assert p.pending() <= limit + len(piece), p.pending()
    except IscsiError:
        assert p.broken is not None
        try:
            p.feed(b"x")
        except ProtocolError:
            pass
        else:
            raise AssertionError("a broken parser accepted more input") from None
    for b in bufs.values():
        assert b.intact(), "Data-In written outside the placed buffer"


# ------------------------------------------------------------------- text_keys


def text_keys(data: bytes) -> None:
    """Text key=value data (Login/Text Response data segments) through every consumer:
    the continuation assembler, the operational negotiator (normal and discovery),
    SendTargets parsing, portals, CHAP binary values.

    Byte 0: bits 0-5 the split into C-bit segments, bit 6 discovery, bit 7 lenient
    (unterminated last pair).
    """
    from bootinit.iscsi.chap import decode_binary
    from bootinit.iscsi.errors import IscsiError
    from bootinit.iscsi.keys import Negotiator, OperationalConfig, TextAssembler, decode_text
    from bootinit.iscsi.text import parse_portal, parse_send_targets

    if not data:
        return
    flags = data[0]
    body = data[1:]
    with contextlib.suppress(IscsiError):
        decode_text(body, allow_unterminated=bool(flags & 0x80))
    asm = TextAssembler(limit=16384)
    pieces = chunks(body, flags & 0x3F) or [b""]
    pairs = None
    try:
        for i, piece in enumerate(pieces):
            pairs = asm.add(piece, i < len(pieces) - 1)
    except IscsiError:
        assert not asm.in_progress  # a refused text leaves nothing behind
        return
    assert pairs is not None
    for discovery in (False, True):
        neg = Negotiator(OperationalConfig(), discovery=discovery)
        try:
            neg.offer()
            neg.receive(pairs)
            neg.result()
        except IscsiError:
            pass
    with contextlib.suppress(IscsiError):
        parse_send_targets(pairs)
    for k, v in pairs:
        try:
            if k == "TargetAddress":
                parse_portal(v)
            elif k.startswith("CHAP_"):
                decode_binary(k, v)
        except IscsiError:
            pass


# ----------------------------------------------------------------------- login

FIXED_ISID = bytes.fromhex("400000000001")
LOGIN_TARGET = "iqn.2024-01.org.bootinit:capture"


def _fixed_random(n: int) -> bytes:
    return bytes((i * 29 + 7) & 0xFF for i in range(n))


def login(data: bytes) -> None:
    """The login state machine fed the Login Responses of a target byte stream.

    Byte 0 picks the credentials (bits 0-1: none, one-way CHAP required, CHAP optional,
    mutual CHAP), discovery (bit 2) and a digest offer (bit 3); the ISID is fixed
    (``400000000001``, the corpus is rewritten to it). Every outcome is a request, a
    success, a redirect or an ``IscsiError``.
    """
    from bootinit.iscsi.chap import ChapCredentials, Secret
    from bootinit.iscsi.errors import IscsiError
    from bootinit.iscsi.keys import OperationalConfig
    from bootinit.iscsi.login import LOGIN_MAX_DATA, LoginConfig, LoginMachine
    from bootinit.iscsi.parser import PduParser
    from bootinit.iscsi.pdu import TARGET_OPCODES, LoginRequest, LoginResponse

    if not data:
        return
    mode = data[0] & 3
    chap = None
    if mode in (1, 2):
        chap = ChapCredentials("alice", Secret("alice-secret-1"))
    elif mode == 3:
        chap = ChapCredentials("alice", Secret("alice-secret-1"), target_username="tgt",
                               target_secret=Secret("target-secret-9"))
    discovery = bool(data[0] & 4)
    both = ("CRC32C", "None")
    op = (OperationalConfig(header_digest=both, data_digest=both) if data[0] & 8
          else OperationalConfig())
    cfg = LoginConfig(operational=op, initiator_name="iqn.2026-11.org.bootinit:fuzz",
                      target_name=None if discovery else LOGIN_TARGET, discovery=discovery,
                      chap=chap, require_auth=False if mode == 2 else None, isid=FIXED_ISID)
    m = LoginMachine(cfg, random_bytes=_fixed_random)
    m.start()
    parser = PduParser(max_recv_data_segment_length=LOGIN_MAX_DATA,
                       accept_opcodes=TARGET_OPCODES, pause_after_login=False)
    steps = 0
    try:
        for pdu in parser.feed(data[1:]):
            if not isinstance(pdu, LoginResponse):
                return  # the session refuses any other PDU during login
            step = m.receive(pdu)
            steps += 1
            if not isinstance(step, LoginRequest):
                return
    except IscsiError:
        return
    assert steps <= cfg.max_exchanges


# --------------------------------------------------------------------- session


def session(data: bytes) -> None:
    """A logged-in session (against the in-process fake target) fed a hostile byte
    stream while a read, a write and a TEST UNIT READY are outstanding; then the fake
    target answers what is left and time runs on.

    Checks: ``receive`` never raises; every task ends with a result or a typed error;
    no read data lands outside the caller's buffer; nothing stays queued or active
    once the tasks are done or the session finished.
    """
    from bootinit.iscsi.errors import IscsiError
    from bootinit.iscsi.task import ScsiRequest
    from bootinit.scsi import cdb
    from bootinit.scsi.sense import ScsiError
    from tests.unit.fake_target import FakeTarget, Harness

    if not data:
        return
    if data[0] & 0x80:
        _discovery_session(data)
        return
    t = FakeTarget()
    h = Harness(t, command_timeout=5.0, nop_interval=None, isid=FIXED_ISID)
    s = h.login()
    t.hold = True
    rbuf = GuardedBuffer(1024)
    tasks = [
        s.submit(ScsiRequest(cdb.read_cdb(0, 2), read_into=rbuf.view), now=h.now),
        s.submit(ScsiRequest(cdb.write_cdb(0, 8), write_data=bytes(4096)), now=h.now),
        s.submit(ScsiRequest(cdb.test_unit_ready()), now=h.now),
    ]
    h.settle()
    for piece in chunks(data[1:], data[0] & 0x7F):
        s.receive(piece, h.now)
    t.release()
    h.run_until(lambda: all(x.done for x in tasks) or s.finished, 600)
    for x in tasks:
        if x.error is not None:
            assert isinstance(x.error, IscsiError | ScsiError), repr(x.error)
    assert rbuf.intact(), "read data written outside the caller's buffer"
    assert s.outstanding() == 0 or s.finished


def _discovery_session(data: bytes) -> None:
    """Byte 0 bit 7: a discovery session with a SendTargets exchange outstanding gets
    the hostile bytes (Text Responses, continuations...). The exchange ends with targets
    or a typed error in bounded time, and the session does not reconnect for it."""
    from bootinit.iscsi.errors import IscsiError
    from bootinit.iscsi.pdu import TextRequest
    from tests.unit.fake_target import FakeTarget, Harness

    t = FakeTarget()
    h = Harness(t, command_timeout=5.0, nop_interval=None, isid=FIXED_ISID, discovery=True,
                target_name=None)
    s = h.login()
    answered: list[TextRequest] = []
    orig = t._dispatch

    def dispatch(pdu: object) -> None:
        if isinstance(pdu, TextRequest) and len(answered) < 1:
            answered.append(pdu)  # the first request is answered by the fuzz bytes
            return
        orig(pdu)  # type: ignore[arg-type]

    t._dispatch = dispatch  # type: ignore[method-assign]
    op = s.send_targets(now=h.now)
    h.settle()
    for piece in chunks(data[1:], data[0] & 0x7F):
        s.receive(piece, h.now)
    h.run_until(lambda: op.done or s.finished, 600)
    assert op.done
    if op.error is not None:
        assert isinstance(op.error, IscsiError), repr(op.error)
    assert s.outstanding() == 0 or s.finished


# ---------------------------------------------------------------------- frames

OUR_MAC = bytes.fromhex("020000000002")
PEER_MAC = bytes.fromhex("020000000001")
OUR_IP = bytes([10, 77, 0, 2])
PEER_IP = bytes([10, 77, 0, 1])
PEER_PORT = 3260
LISTEN_PORT = 5000
FRAME_RCVBUF = 65536
_OUTPUT_LIMIT = 256


def _ip_header(src: bytes, dst: bytes, proto: int, plen: int, ident: int = 1,
               ff: int = 0x4000, ttl: int = 64) -> bytes:
    from netstack.ipv4 import header_checksum_sum

    total = 20 + plen
    s = 0x4500 + total + ident + ff + ((ttl << 8) | proto) + header_checksum_sum(src, dst)
    s = (s & 0xFFFF) + (s >> 16)
    s = (s & 0xFFFF) + (s >> 16)
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, ident, ff, ttl, proto,
                       ~s & 0xFFFF, src, dst)


def eth(payload: bytes, ethertype: int = 0x0800, src: bytes = PEER_MAC,
        dst: bytes = OUR_MAC) -> bytes:
    """An Ethernet II frame."""
    return dst + src + ethertype.to_bytes(2, "big") + payload


def tcp_frame(sport: int, dport: int, seq: int, ack: int, flags: int, window: int,
              options: bytes = b"", payload: bytes = b"", src: bytes = PEER_IP,
              dst: bytes = OUR_IP) -> bytes:
    """A whole Ethernet/IPv4/TCP frame with correct checksums (options taken as given,
    padded to a multiple of 4 with EOL)."""
    from netstack.checksum import transport_checksum

    options = options[:40]
    options += b"\0" * (-len(options) % 4)
    hlen = 20 + len(options)
    hdr = struct.pack("!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF,
                      (hlen // 4) << 4, flags & 0xFF, window & 0xFFFF, 0, 0) + options
    seg = bytearray(hdr + payload)
    csum = transport_checksum(src, dst, 6, memoryview(seg))
    seg[16:18] = csum.to_bytes(2, "big")
    return eth(_ip_header(src, dst, 6, len(seg)) + bytes(seg))


class FrameRig:
    """An interface + TCP layer with one established connection (to the peer's port
    3260, data in flight) and a listener on port 5000, on a fake clock."""

    def __init__(self) -> None:
        from netstack.counters import Counters
        from netstack.interface import Interface, InterfaceConfig
        from netstack.ipv4 import ReassemblyConfig
        from netstack.tcp.connection import TcpConfig
        from netstack.tcp.layer import TcpLayer
        from netstack.tcp.segment import parse

        self.now = 100.0
        counters = Counters()
        cfg = InterfaceConfig(
            mac=OUR_MAC, ip=ipaddress.IPv4Interface("10.77.0.2/24"), strict=True,
            reassembly=ReassemblyConfig(timeout=5.0, max_datagrams=8, max_bytes=64 << 10))
        self.iface = Interface(cfg, counters=counters)
        self.tcp = TcpLayer(OUR_IP, mss=1460, rng=random.Random(1), counters=counters)
        self.iface.attach_tcp(self.tcp)
        self.iface.start(self.now)
        # the peer is learned through ARP, as on a real link
        from netstack.arp import OP_REPLY, build_arp

        self.tcp_config = TcpConfig(rcvbuf=FRAME_RCVBUF, sndbuf=65536, ooo_max_segments=64)
        self.conn = self.tcp.connect(PEER_IP, PEER_PORT, self.now, config=self.tcp_config)
        self.iface.frames_to_send(self.now)  # ARP request (the SYN waits for it)
        self.iface.receive_frame(eth(build_arp(OP_REPLY, PEER_MAC, PEER_IP, OUR_MAC, OUR_IP),
                                     0x0806), self.now)
        syn = None
        for f in self.output():
            if f[12:14] == b"\x08\x00" and f[23] == 6:
                syn = parse(memoryview(f)[34:])
        assert syn is not None, "no SYN"
        self.peer_seq = 0x10000000
        opts = b"\x02\x04\x05\xb4\x04\x02\x08\x0a\x00\x00\x00\x01\x00\x00\x00\x00\x01\x03\x03\x07"
        self.iface.receive_frame(tcp_frame(PEER_PORT, self.conn.local_port, self.peer_seq,
                                           syn.seq + 1, 0x12, 65535, opts), self.now)
        self.peer_seq += 1
        assert self.conn.connected, self.conn.state
        self.tcp.listen(LISTEN_PORT, config=self.tcp_config, backlog=2)
        self.conn.send(bytes(range(256)) * 12)
        self.iface.frames_to_send(self.now)

    def check(self) -> None:
        """Bounds that must hold after any input."""
        iface = self.iface
        assert iface.counters.as_dict().get("eth", {}).get("internal_errors", 0) == 0
        r = iface.ipv4.reassembler
        assert r.bytes_held <= r.config.max_bytes and len(r) <= r.config.max_datagrams
        for c in self.tcp.connections():
            held = c.available() + c._ooo_bytes
            assert held <= c.config.rcvbuf, (held, c.config.rcvbuf)
            assert len(c._ooo) <= c.config.ooo_max_segments
            assert len(c._sndbuf) <= c.config.sndbuf
            assert len(c._peer_sacked) <= 64
        assert len(self.tcp.connections()) <= 2 + 2 * 8  # ours + listener backlog bound
        arp = iface.arp
        assert arp._queued_bytes <= arp.config.queue_bytes_limit
        assert len(arp.entries()) <= arp.config.max_entries + 1

    def output(self) -> list[bytes]:
        sent = self.iface.frames_to_send(self.now)
        out = [f for f in sent if isinstance(f, bytes)]
        assert len(out) == len(sent), "a TSO super-frame without TSO"
        assert len(out) <= _OUTPUT_LIMIT, f"{len(out)} frames for one input"
        # nothing we build may exceed the MTU (the interface would drop it: a stall)
        assert all(len(f) <= 14 + self.iface.mtu for f in out)
        assert self.iface.counters.get("ip", "too_big") == 0
        return out


def frames(data: bytes) -> None:
    """Ethernet frames into an interface with live TCP connections (strict mode: any
    exception escaping ``receive_frame`` is a bug; drops are counted).

    The input is a list of records ``[kind][len][body]``: 0 a raw frame; 1 a TCP segment
    to the live connection with fuzzed flags, sequence/ack offsets, window, options and
    payload (checksums right); 2 an IPv4 fragment; 3 an ARP packet; 4 time passing; 5 the
    user reading/sending; 6 a segment to the listener (SYN flood, handshakes); 7 a TCP
    segment with a valid IP header but a wrong checksum or a bad data offset.
    """
    from netstack.arp import build_arp

    rig = FrameRig()
    rd = Reader(data)
    iface, conn = rig.iface, rig.conn
    records = 0
    while rd.left and records < 512:
        records += 1
        kind = rd.u8() & 7
        body = Reader(rd.take(rd.uint(2) & 0x7FF))
        if kind == 0:
            iface.receive_frame(body.rest(), rig.now)
        elif kind in (1, 6, 7):
            flags = body.u8()
            seq_off = body.sint(4) if body.u8() & 1 else body.sint(1) * 100
            ack_off = body.sint(4) if body.u8() & 1 else body.sint(1) * 100
            window = body.uint(2)
            opts = body.take(body.u8() % 41)
            payload = body.rest()
            if kind == 6:
                sport, dport = 40000 + (flags & 7), LISTEN_PORT
                seq, ack = 1000 + seq_off, ack_off
            else:
                sport, dport = PEER_PORT, conn.local_port
                seq, ack = conn.rcv_nxt + seq_off, conn.snd_una + ack_off
            f = tcp_frame(sport, dport, seq, ack, flags, window, opts, payload)
            if kind == 7:
                b = bytearray(f)
                b[34 + 12] = (window & 0xF0) or 0x10  # data offset from the window bits
                b[34 + 16] ^= 0xFF if flags & 1 else 0
                f = bytes(b)
            iface.receive_frame(f, rig.now)
        elif kind == 2:
            ident = body.uint(2)
            ff = body.uint(2) & 0x3FFF
            proto = (6, 1, 17, body.u8())[body.u8() & 3]
            payload = body.rest()
            iface.receive_frame(eth(_ip_header(PEER_IP, OUR_IP, proto, len(payload), ident,
                                               ff) + payload), rig.now)
        elif kind == 3:
            op = body.u8() & 3
            sha = body.take(6).ljust(6, b"\0")
            spa = (PEER_IP, OUR_IP, body.take(4).ljust(4, b"\0"), bytes(4))[body.u8() & 3]
            tha = body.take(6).ljust(6, b"\0")
            tpa = (OUR_IP, PEER_IP, body.take(4).ljust(4, b"\0"), bytes(4))[body.u8() & 3]
            iface.receive_frame(eth(build_arp(op, sha, spa, tha, tpa), 0x0806,
                                    src=sha), rig.now)
        elif kind == 4:
            rig.now += body.u8() * 0.25 + body.u8() * 0.001
            iface.on_deadline(rig.now)
        else:
            what = body.u8() & 3
            if what == 0:
                conn.recv(body.uint(2) or -1)
            elif what == 1 and conn.send_space() > 0:
                conn.send(body.rest() or b"z" * 1000)
            elif what == 2:
                lst = rig.tcp._listeners.get(LISTEN_PORT)
                while lst is not None and (a := lst.accept()) is not None:
                    a.recv()
            else:
                rig.tcp.take_notified()
        rig.output()
        rig.check()
    # time runs out: every timer fires and everything stays bounded
    for _ in range(8):
        d = iface.next_deadline()
        if d is None:
            break
        rig.now = max(rig.now, d) + 0.5
        iface.on_deadline(rig.now)
        rig.output()
        rig.check()


# ------------------------------------------------------------------------ ibft


def ibft(data: bytes) -> None:
    """The iBFT reader (strict and lenient) and everything downstream of it."""
    from firmware_tables.config import BootConfig
    from firmware_tables.errors import FirmwareTableError, IbftError
    from firmware_tables.ibft import parse_ibft
    from firmware_tables.ibft.find import scan_memory
    from firmware_tables.ibft.report import format_table, table_to_dict
    from firmware_tables.ibft.sysfs import render_sysfs

    try:
        table = parse_ibft(data, strict=False)
    except IbftError:
        return
    try:
        parse_ibft(data)
    except IbftError:
        assert table.problems
    format_table(table)
    table_to_dict(table)
    render_sysfs(table, mask_secrets=True)
    with contextlib.suppress(FirmwareTableError):
        BootConfig.from_ibft(table)
    with contextlib.suppress(FirmwareTableError):
        scan_memory(bytes(16) + data)


# ------------------------------------------------------------------------- nbd

NBD_EXPORT_SIZE = 1 << 20


def nbd(data: bytes) -> None:
    """The NBD server core fed a client byte stream; the caller answers every request
    (reads with zeros). Checks: ``receive`` never raises, a protocol failure is typed,
    requests stay inside the export, buffered input stays bounded."""
    from bootinit.nbd import (
        FlushRequest,
        NbdExport,
        NbdProtocolError,
        NbdRequestError,
        NbdServerProtocol,
        ProtocolFailed,
        ReadRequest,
        RequestRejected,
        TrimRequest,
        WriteRequest,
    )

    if not data:
        return
    export = NbdExport(size=NBD_EXPORT_SIZE, block_size=512, trim=bool(data[0] & 1),
                       read_only=bool(data[0] & 2), max_payload=1 << 16)
    proto = NbdServerProtocol(export, max_outstanding=4, max_outstanding_bytes=1 << 17)
    proto.data_to_send()
    fed = 0
    for piece in chunks(data[1:], data[0] >> 2):
        fed += len(piece)
        events = proto.receive(piece)
        while True:
            for ev in events:
                if isinstance(ev, ReadRequest):
                    assert ev.offset >= 0 and ev.offset + ev.length <= export.size
                    assert ev.length <= export.max_payload
                    proto.reply_read(ev.handle, bytes(ev.length))
                elif isinstance(ev, WriteRequest):
                    assert not export.read_only
                    assert ev.offset >= 0 and ev.offset + ev.length <= export.size
                    proto.reply_ok(ev.handle)
                elif isinstance(ev, FlushRequest | TrimRequest):
                    proto.reply_ok(ev.handle)
                elif isinstance(ev, RequestRejected):
                    assert isinstance(ev.error, NbdRequestError)
                elif isinstance(ev, ProtocolFailed):
                    assert isinstance(ev.error, NbdProtocolError)
            proto.data_to_send()
            if not proto.backlog or proto.throttled or proto.finished:
                break
            events = proto.receive(b"")
        assert proto.backlog <= fed
        assert proto.outstanding == 0
        if proto.finished:
            break


TARGETS: dict[str, Callable[[bytes], None]] = {
    "pdu_parser": pdu_parser,
    "text_keys": text_keys,
    "login": login,
    "session": session,
    "frames": frames,
    "ibft": ibft,
    "nbd": nbd,
}
"""Every fuzz target by name (``fuzz/corpus/<name>/`` holds its seeds)."""



def _selftest(data: bytes) -> None:
    """A target that is always wrong (FUZZ_SELFTEST=1): proves the runner reports bugs."""
    if len(data) >= 2:
        raise RuntimeError("fuzz self-test: a planted bug")


def _selftest_alloc(data: bytes) -> None:
    """Always allocates without bound (FUZZ_SELFTEST=1): the runner's memory cap."""
    if len(data) >= 2:
        bytearray(8 << 30)


if os.environ.get("FUZZ_SELFTEST"):
    TARGETS["selftest"] = _selftest
    TARGETS["selftest_alloc"] = _selftest_alloc

#: Modules each target exercises (what atheris instruments for coverage).
INSTRUMENT: dict[str, tuple[str, ...]] = {
    "pdu_parser": ("bootinit.iscsi.parser", "bootinit.iscsi.pdu", "bootinit.iscsi.digest"),
    "text_keys": ("bootinit.iscsi.keys", "bootinit.iscsi.text", "bootinit.iscsi.chap"),
    "login": ("bootinit.iscsi.login", "bootinit.iscsi.keys", "bootinit.iscsi.chap",
              "bootinit.iscsi.pdu", "bootinit.iscsi.parser"),
    "session": ("bootinit.iscsi.session", "bootinit.iscsi.task", "bootinit.iscsi.pdu",
                "bootinit.iscsi.parser", "bootinit.iscsi.text", "bootinit.scsi.sense"),
    "frames": ("netstack.interface", "netstack.ethernet", "netstack.arp", "netstack.ipv4",
               "netstack.icmp", "netstack.tcp.layer", "netstack.tcp.connection",
               "netstack.tcp.segment"),
    "ibft": ("firmware_tables.ibft.parse", "firmware_tables.ibft.report",
             "firmware_tables.ibft.sysfs", "firmware_tables.config",
             "firmware_tables.ibft.find"),
    "nbd": ("bootinit.nbd",),
    "selftest": (),
    "selftest_alloc": (),
}
