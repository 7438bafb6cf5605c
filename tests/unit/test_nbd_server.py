"""NbdServer (the loop glue) over a real UNIX socket and an in-memory async device.

The client side is a plain non-blocking socket read while the loop runs, so the test
drives the same loop the server lives in.
"""

from __future__ import annotations

import os
import socket
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bootinit.nbd_server import IoResult, NbdServer, NbdServerError, errno_for
from netstack.loop import Loop

MiB = 1 << 20
BS = 512


@dataclass
class FakeReq:
    kind: str
    lba: int
    count: int
    error: BaseException | None = None
    done: bool = False


class MemDevice:
    """An in-memory block device with BlockDevice's async interface.

    ``hold=True`` keeps requests until the test completes them (any order);
    otherwise each completes after ``delay(req)`` seconds on the loop.
    """

    def __init__(self, loop: Loop, blocks: int = 2048, block_size: int = BS,
                 hold: bool = False, delay: Callable[[FakeReq], float] | None = None) -> None:
        self.loop = loop
        self.block_size = block_size
        self.num_blocks = blocks
        self.data = bytearray(os.urandom(blocks * block_size))
        self.hold = hold
        self.delay = delay or (lambda r: 0.0)
        self.held: list[tuple[FakeReq, Callable[[], None]]] = []
        self.log: list[FakeReq] = []
        self.fail_next: BaseException | None = None
        self.flushes = 0
        self.max_outstanding = 0
        self._outstanding = 0

    @property
    def capacity(self) -> int:
        return self.num_blocks * self.block_size

    def _submit(self, req: FakeReq, work: Callable[[], None],
                cb: Callable[[IoResult], None] | None) -> FakeReq:
        self.log.append(req)
        if self.fail_next is not None:
            req.error, self.fail_next = self.fail_next, None
        self._outstanding += 1
        self.max_outstanding = max(self.max_outstanding, self._outstanding)

        def complete() -> None:
            if req.error is None:
                work()
            req.done = True
            self._outstanding -= 1
            if cb is not None:
                cb(req)

        if self.hold:
            self.held.append((req, complete))
        else:
            self.loop.call_later(self.delay(req), complete)
        return req

    def submit_read(self, lba: int, count: int, buf: bytearray | memoryview | None = None,
                    callback: Callable[[IoResult], None] | None = None) -> FakeReq:
        assert buf is not None and len(buf) == count * self.block_size
        assert lba >= 0 and lba + count <= self.num_blocks

        def work() -> None:
            bs = self.block_size
            memoryview(buf)[:] = self.data[lba * bs:(lba + count) * bs]

        return self._submit(FakeReq("read", lba, count), work, callback)

    def submit_write(self, lba: int, data: bytes | bytearray | memoryview,
                     callback: Callable[[IoResult], None] | None = None) -> FakeReq:
        bs = self.block_size
        count = len(data) // bs
        assert lba >= 0 and lba + count <= self.num_blocks
        payload = bytes(data)

        def work() -> None:
            self.data[lba * bs:lba * bs + len(payload)] = payload

        return self._submit(FakeReq("write", lba, count), work, callback)

    def submit_flush(self, callback: Callable[[IoResult], None] | None = None) -> FakeReq:
        def work() -> None:
            self.flushes += 1

        return self._submit(FakeReq("flush", 0, 0), work, callback)

    def complete(self, index: int = 0) -> None:
        _req, fn = self.held.pop(index)
        fn()


class Client:
    """A minimal NBD client on a non-blocking socket, driven by the loop."""

    def __init__(self, loop: Loop, path: Path) -> None:
        self.loop = loop
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(os.fspath(path))
        self.sock.setblocking(False)
        self.buf = bytearray()
        self.eof = False

    def pump(self) -> None:
        while True:
            try:
                d = self.sock.recv(1 << 20)
            except BlockingIOError:
                return
            except OSError:
                self.eof = True
                return
            if not d:
                self.eof = True
                return
            self.buf += d

    def read(self, n: int, timeout: float = 5.0) -> bytes:
        def have() -> bool:
            self.pump()
            return len(self.buf) >= n or self.eof

        self.loop.run_until(have, timeout, f"{n} bytes from the server")
        if len(self.buf) < n:
            raise EOFError(f"connection closed after {len(self.buf)} of {n} bytes")
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def send(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                k = self.sock.send(view)
            except BlockingIOError:
                self.loop.run_once(0.01)
                continue
            view = view[k:]

    def handshake(self, name: bytes = b"") -> tuple[int, int, dict[int, bytes]]:
        assert self.read(18) == b"NBDMAGICIHAVEOPT\x00\x03"
        self.send(struct.pack(">I", 3))
        data = struct.pack(">I", len(name)) + name + struct.pack(">HH", 1, 3)
        self.send(b"IHAVEOPT" + struct.pack(">II", 7, len(data)) + data)
        infos: dict[int, bytes] = {}
        while True:
            _magic, _opt, rtype, length = struct.unpack(">QIII", self.read(20))
            body = self.read(length) if length else b""
            if rtype == 1:
                break
            assert rtype == 3, hex(rtype)
            infos[struct.unpack(">H", body[:2])[0]] = body[2:]
        size, flags = struct.unpack(">QH", infos[0])
        return size, flags, infos

    def request(self, typ: int, handle: int, offset: int = 0, length: int = 0,
                payload: bytes = b"", flags: int = 0) -> None:
        self.send(struct.pack(">IHHQQI", 0x25609513, flags, typ, handle, offset, length)
                  + payload)

    def reply(self, read_len: dict[int, int] | None = None,
              timeout: float = 5.0) -> tuple[int, int, bytes]:
        magic, err, handle = struct.unpack(">IIQ", self.read(16, timeout))
        assert magic == 0x67446698
        n = (read_len or {}).get(handle, 0) if err == 0 else 0
        return handle, err, self.read(n, timeout) if n else b""

    def closed_by_server(self, timeout: float = 5.0) -> bool:
        def gone() -> bool:
            self.pump()
            return self.eof

        self.loop.run_until(gone, timeout, "the server to close the connection")
        return True

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def loop() -> Iterator[Loop]:
    lp = Loop()
    yield lp
    lp.close()


@pytest.fixture
def sock_path(tmp_path: Path) -> Path:
    return tmp_path / "nbd.sock"


def serve(loop: Loop, path: Path, dev: MemDevice, **kw: object) -> NbdServer:
    return NbdServer(loop, path, dev, **kw)  # type: ignore[arg-type]


def test_go_read_write_flush_against_memory(loop: Loop, sock_path: Path) -> None:
    dev = MemDevice(loop)
    with serve(loop, sock_path, dev, name="mem") as srv:
        c = Client(loop, sock_path)
        size, flags, infos = c.handshake(b"mem")
        assert size == dev.capacity
        assert flags & 0x0001 and flags & 0x0004 and flags & 0x0100 and not flags & 0x0020
        assert struct.unpack(">III", infos[3]) == (512, 4096, 32 * MiB)
        c.request(0, 1, 4096, 8192)
        h, err, data = c.reply({1: 8192})
        assert (h, err) == (1, 0) and data == dev.data[4096:4096 + 8192]
        payload = os.urandom(64 * 1024)
        c.request(1, 2, 65536, len(payload), payload, flags=1)   # FUA
        assert c.reply() == (2, 0, b"")
        assert dev.data[65536:65536 + len(payload)] == payload
        assert dev.flushes == 1                                   # FUA -> SYNCHRONIZE CACHE
        c.request(3, 3)
        assert c.reply() == (3, 0, b"") and dev.flushes == 2
        c.request(2, 4)                                          # DISC
        assert c.closed_by_server()
        assert srv.connections == []
        assert srv.counters["reads"] == 1 and srv.counters["writes"] == 1
        assert srv.counters["bytes_written"] == len(payload)
        c.close()
    assert not sock_path.exists()


def test_replies_in_completion_order_not_request_order(loop: Loop, sock_path: Path) -> None:
    dev = MemDevice(loop, hold=True)
    with serve(loop, sock_path, dev):
        c = Client(loop, sock_path)
        c.handshake()
        for h in range(1, 6):
            c.request(0, h, h * 4096, 4096)
        loop.run_until(lambda: len(dev.held) == 5, 5, "5 reads at the device")
        for i in (4, 2, 0, 1, 0):     # complete handles 5, 3, 1, 4, 2
            dev.complete(i)
        lens = {h: 4096 for h in range(1, 6)}
        got = [c.reply(lens) for _ in range(5)]
        assert [g[0] for g in got] == [5, 3, 1, 4, 2]
        for h, err, data in got:
            assert err == 0 and data == dev.data[h * 4096:(h + 1) * 4096]
        c.close()


def test_backpressure_stops_reading_when_too_many_are_outstanding(loop: Loop,
                                                                  sock_path: Path) -> None:
    dev = MemDevice(loop, hold=True)
    with serve(loop, sock_path, dev, max_inflight=4) as srv:
        c = Client(loop, sock_path)
        c.handshake()
        for h in range(20):
            c.request(0, h, 0, 512)
        loop.run_for(0.2)
        assert len(dev.held) == 4           # exactly the limit reaches the device
        conn = srv.connections[0]
        assert conn.proto.throttled and not conn._reading
        seen = 0
        while seen < 20:
            loop.run_until(lambda: bool(dev.held), 5, "a request at the device")
            while dev.held:
                dev.complete()
                seen += 1
            loop.run_for(0.01)
        assert dev.max_outstanding == 4
        handles = sorted(c.reply({h: 512 for h in range(20)})[0] for _ in range(20))
        assert handles == list(range(20))
        assert srv.counters["read_paused"] >= 1
        c.close()


def test_many_in_flight_with_random_completion_times(loop: Loop, sock_path: Path) -> None:
    import random
    rng = random.Random(7)
    dev = MemDevice(loop, delay=lambda r: rng.uniform(0, 0.01))
    with serve(loop, sock_path, dev, max_inflight=16):
        c = Client(loop, sock_path)
        c.handshake()
        expect = {}
        for h in range(200):
            off = rng.randrange(0, dev.num_blocks - 8) * BS
            c.request(0, h, off, 8 * BS)
            expect[h] = bytes(dev.data[off:off + 8 * BS])
        got = {}
        for _ in range(200):
            h, err, data = c.reply({h: 8 * BS for h in expect})
            assert err == 0
            got[h] = data
        assert got == expect
        assert 1 < dev.max_outstanding <= 16
        c.close()


def test_device_errors_map_to_nbd_errors(loop: Loop, sock_path: Path) -> None:
    class Sense:
        def __init__(self, key: int, asc: int = 0) -> None:
            self.key, self.asc = key, asc

    class FakeScsiError(Exception):
        def __init__(self, key: int, asc: int = 0) -> None:
            super().__init__("scsi")
            self.sense = Sense(key, asc)

    dev = MemDevice(loop)
    with serve(loop, sock_path, dev) as srv:
        c = Client(loop, sock_path)
        c.handshake()
        dev.fail_next = OSError("link down")
        c.request(0, 1, 0, 512)
        assert c.reply({1: 512}) == (1, 5, b"")             # EIO, no payload
        dev.fail_next = FakeScsiError(0x07)
        c.request(1, 2, 0, 512, bytes(512))
        assert c.reply() == (2, 1, b"")                     # DATA PROTECT -> EPERM
        dev.fail_next = FakeScsiError(0x05, 0x20)           # flush refused: no cache
        c.request(3, 3)
        assert c.reply() == (3, 0, b"")
        c.request(0, 4, 0, 512)                             # the session goes on
        assert c.reply({4: 512})[1] == 0
        assert srv.counters["io_errors"] == 2
        c.close()
    assert errno_for(FakeScsiError(0x05, 0x21)) == 22
    assert errno_for(FakeScsiError(0x03)) == 5


def test_invalid_requests_are_answered_and_bad_magic_closes(loop: Loop,
                                                           sock_path: Path) -> None:
    dev = MemDevice(loop)
    with serve(loop, sock_path, dev) as srv:
        c = Client(loop, sock_path)
        c.handshake()
        c.request(0, 1, 100, 512)
        assert c.reply() == (1, 22, b"")
        c.request(1, 2, dev.capacity, 512, bytes(512))
        assert c.reply() == (2, 28, b"")
        assert dev.log == []
        c.send(b"\xde\xad\xbe\xef" + bytes(24))
        assert c.closed_by_server()
        assert srv.counters["protocol_errors"] == 1
        assert "request magic" in str(srv.last_protocol_error)
        c.close()


def test_handshake_deadline(loop: Loop, sock_path: Path) -> None:
    dev = MemDevice(loop)
    with serve(loop, sock_path, dev, handshake_timeout=0.2) as srv:
        c = Client(loop, sock_path)
        t0 = time.monotonic()
        assert c.closed_by_server(5)
        assert 0.15 < time.monotonic() - t0 < 2
        assert srv.counters["handshake_timeouts"] == 1
        c.close()


def test_client_that_never_reads_replies_is_dropped(loop: Loop, sock_path: Path) -> None:
    dev = MemDevice(loop, blocks=65536)
    with serve(loop, sock_path, dev, send_timeout=0.3, max_output=2 * MiB,
               max_inflight_bytes=4 * MiB) as srv:
        c = Client(loop, sock_path)
        c.handshake()
        for h in range(32):
            c.request(0, h, 0, MiB)
        loop.run_until(lambda: srv.counters["send_timeouts"] == 1, 10, "the send deadline")
        assert srv.connections == []
        # reading stopped long before all 32 MiB were read from the device
        assert len(dev.log) < 32
        c.close()


def test_client_vanishing_mid_flight_leaves_no_connection(loop: Loop, sock_path: Path) -> None:
    dev = MemDevice(loop, hold=True)
    with serve(loop, sock_path, dev) as srv:
        c = Client(loop, sock_path)
        c.handshake()
        c.request(0, 1, 0, 512)
        loop.run_until(lambda: len(dev.held) == 1, 5, "the read")
        c.close()
        loop.run_until(lambda: not srv.connections, 5, "the server to notice")
        dev.complete()                       # a late completion is ignored
        loop.run_for(0.01)


def test_two_clients_at_once_and_abort(loop: Loop, sock_path: Path) -> None:
    dev = MemDevice(loop)
    with serve(loop, sock_path, dev) as srv:
        a, b = Client(loop, sock_path), Client(loop, sock_path)
        a.handshake()
        b.handshake()
        payload = os.urandom(4096)
        a.request(1, 1, 8192, 4096, payload)
        assert a.reply() == (1, 0, b"")
        b.request(0, 1, 8192, 4096)
        assert b.reply({1: 4096}) == (1, 0, payload)
        assert len(srv.connections) == 2
        c = Client(loop, sock_path)
        c.read(18)
        c.send(struct.pack(">I", 1) + b"IHAVEOPT" + struct.pack(">II", 2, 0))
        assert c.read(20)[8:16] == struct.pack(">II", 2, 1)   # ACK to NBD_OPT_ABORT
        assert c.closed_by_server()
        for x in (a, b, c):
            x.close()


def test_socket_path_checks(loop: Loop, tmp_path: Path) -> None:
    dev = MemDevice(loop)
    regular = tmp_path / "file"
    regular.write_text("x")
    with pytest.raises(NbdServerError, match="not a socket"):
        serve(loop, regular, dev)
    path = tmp_path / "s.sock"
    srv = serve(loop, path, dev)
    with pytest.raises(NbdServerError, match="in use"):
        serve(loop, path, dev)
    srv.close()
    # a stale socket file (nobody listening) is replaced
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(os.fspath(path))
    stale.close()
    srv2 = serve(loop, path, dev)
    assert srv2.url == f"nbd+unix:///?socket={path}"
    srv2.close()
    srv2.close()
    with pytest.raises(NbdServerError, match="too long"):
        serve(loop, tmp_path / ("x" * 120), dev)
