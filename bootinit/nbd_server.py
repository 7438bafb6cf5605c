"""NBD server in the polling loop: a UNIX socket listener serving one block device.

::

    dev = Initiator(stack).open_block_device(url)
    srv = NbdServer(stack.loop, "/run/bootinit/nbd.sock", dev)
    proc = subprocess.Popen(["qemu-img", "info", f"nbd:unix:{srv.path}"])
    stack.loop.run_until(lambda: proc.poll() is not None, 30, "qemu-img")
    srv.close()

Everything runs inside :class:`~netstack.loop.Loop`: the listener and every connection
are non-blocking sockets watched by the loop; the protocol is
:class:`~bootinit.nbd.NbdServerProtocol` (sans-IO), and each request goes straight into
the device's asynchronous API (``submit_read`` / ``submit_write`` / ``submit_flush``),
so many NBD requests are in flight at once and the iSCSI session's queue depth is used.
Replies are sent as each request completes (NBD allows any order, proto.md
"Transmission").

Backpressure: a connection stops reading its socket while it has ``max_inflight``
requests or ``max_inflight_bytes`` of payload outstanding, or ``max_output`` bytes of
replies the client has not taken; a slow target stalls that NBD client, never the loop.

The loop only watches descriptors for reading, so waiting for a socket to become
writable uses a private epoll instance holding the socket with ``EPOLLOUT``: an epoll
descriptor is itself readable while one of its descriptors is ready, so the loop wakes
us through an ordinary reader.

Deadlines: the handshake must finish within ``handshake_timeout``; a connection whose
replies make no progress for ``send_timeout`` is dropped. Each device request is bounded
by the iSCSI session's own command timeout and recovery deadline.

Flushes and FUA writes end in SYNCHRONIZE CACHE; an ILLEGAL REQUEST answer to it (a LUN
without a volatile cache) counts as success, like :meth:`BlockDevice.flush`. TRIM, when
advertised, is acknowledged without discarding anything (proto.md: "A server MAY
discard len bytes ... but is not required to").
"""

from __future__ import annotations

import contextlib
import errno as _errno
import itertools
import os
import select
import socket
import stat
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from bootinit.nbd import (
    DEFAULT_MAX_PAYLOAD,
    Disconnect,
    Errno,
    FlushRequest,
    NbdExport,
    NbdServerProtocol,
    Negotiated,
    OptionRefused,
    ProtocolFailed,
    ReadRequest,
    RequestRejected,
    State,
    TrimRequest,
    WriteRequest,
)
from netstack.loop import Loop, Timer

RECV_SIZE = 256 << 10


class IoResult(Protocol):
    """What a device hands to an I/O callback (:class:`bootinit.blockdev.IoRequest`)."""

    @property
    def error(self) -> BaseException | None:
        """The failure, or None."""
        ...


class AsyncBlockDevice(Protocol):
    """The part of :class:`bootinit.blockdev.BlockDevice` the server uses."""

    @property
    def block_size(self) -> int:
        """Logical block size in bytes."""
        ...

    @property
    def capacity(self) -> int:
        """Size in bytes."""
        ...

    def submit_read(self, lba: int, count: int, buf: bytearray | memoryview | None = None,
                    callback: Callable[[IoResult], None] | None = None) -> object:
        """Read ``count`` blocks at ``lba`` into ``buf``; ``callback`` when done."""
        ...

    def submit_write(self, lba: int, data: bytes | bytearray | memoryview,
                     callback: Callable[[IoResult], None] | None = None) -> object:
        """Write ``data`` at ``lba``; ``callback`` when done."""
        ...

    def submit_flush(self, callback: Callable[[IoResult], None] | None = None) -> object:
        """SYNCHRONIZE CACHE; ``callback`` when done."""
        ...


class NbdServerError(Exception):
    """The server could not be set up (socket path in use, too long, ...)."""


def _sense_key(exc: BaseException) -> tuple[int, int] | None:
    sense = getattr(exc, "sense", None)
    key = getattr(sense, "key", None)
    if not isinstance(key, int):
        return None
    asc = getattr(sense, "asc", 0)
    return key, asc if isinstance(asc, int) else 0


def errno_for(exc: BaseException) -> Errno:
    """The NBD error for a failed device request (proto.md "Error values").

    SCSI DATA PROTECT -> ``EPERM``; ILLEGAL REQUEST with LBA out of range -> ``EINVAL``;
    space allocation failed -> ``ENOSPC``; everything else (transport, timeouts,
    medium errors) -> ``EIO``.
    """
    if isinstance(exc, ValueError):
        return Errno.EINVAL
    ks = _sense_key(exc)
    if ks is not None:
        key, asc = ks
        if key == 0x07:
            return Errno.EPERM
        if key == 0x05 and asc == 0x21:
            return Errno.EINVAL
        if asc == 0x27 and key != 0x07:
            return Errno.ENOSPC
    return Errno.EIO


def _flush_ok(exc: BaseException | None) -> bool:
    """SYNCHRONIZE CACHE succeeded, or was refused as ILLEGAL REQUEST (no cache)."""
    if exc is None:
        return True
    ks = _sense_key(exc)
    return ks is not None and ks[0] == 0x05


class NbdConnection:
    """One client connection (created by :class:`NbdServer`)."""

    def __init__(self, server: NbdServer, sock: socket.socket) -> None:
        self.server = server
        self.loop = server.loop
        self.sock = sock
        self.proto = NbdServerProtocol(server.export, max_outstanding=server.max_inflight,
                                       max_outstanding_bytes=server.max_inflight_bytes)
        self.closed = False
        self._busy = False
        self._again = False
        self.close_reason = ""
        self._reading = False
        self._out: deque[memoryview] = deque()
        self._out_bytes = 0
        self._ep: select.epoll | None = None
        self._waiting_writable = False
        self._send_timer: Timer | None = None
        self._hs_timer: Timer | None = self.loop.call_later(server.handshake_timeout,
                                                            self._handshake_expired)
        self._set_reading(True)
        self._flush()

    # ----------------------------------------------------------------------- reading

    def _want_read(self) -> bool:
        p = self.proto
        return (not self.closed and not p.throttled and not p.backlog
                and self._out_bytes < self.server.max_output
                and p.state in (State.CLIENT_FLAGS, State.OPTIONS, State.TRANSMISSION))

    def _set_reading(self, on: bool) -> None:
        if on and not self._reading:
            self.loop.add_reader(self.sock, self._on_readable)
            self._reading = True
        elif not on and self._reading:
            self.loop.remove_reader(self.sock)
            self._reading = False
            self.server.counters["read_paused"] += 1

    def _update(self) -> None:
        """After any change: parse held-back requests, flush, close when done,
        pause/resume reading (re-entrant calls are folded into the running one)."""
        if self.closed:
            return
        if self._busy:
            self._again = True
            return
        self._busy = True
        try:
            self._again = True
            while self._again and not self.closed:
                self._again = False
                self._step()
        finally:
            self._busy = False

    def _step(self) -> None:
        p = self.proto
        p.paused = self._out_bytes >= self.server.max_output
        while p.backlog and not p.throttled and not self.closed:
            evs = p.receive(b"")
            for ev in evs:
                self._dispatch(ev)
                if self.closed:
                    return
            if not evs:
                break
        self._flush()
        if self.closed:
            return
        p.paused = self._out_bytes >= self.server.max_output
        if p.backlog and not p.throttled:
            self._again = True
            return
        if self.proto.finished and not self._out:
            self.close("finished")
            return
        self._set_reading(self._want_read())

    def _on_readable(self) -> None:
        try:
            data = self.sock.recv(RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            self.close(f"recv failed: {e}")
            return
        if not data:
            self.close("client closed the connection")
            return
        self.server.counters["bytes_in"] += len(data)
        self._busy = True
        try:
            for ev in self.proto.receive(data):
                self._dispatch(ev)
                if self.closed:
                    return
        finally:
            self._busy = False
        self._update()

    # ---------------------------------------------------------------------- requests

    def _dispatch(self, ev: object) -> None:
        c = self.server.counters
        if isinstance(ev, ReadRequest):
            c["reads"] += 1
            self._read(ev)
        elif isinstance(ev, WriteRequest):
            c["writes"] += 1
            self._write(ev)
        elif isinstance(ev, FlushRequest):
            c["flushes"] += 1
            self._flush_cmd(ev.handle)
        elif isinstance(ev, TrimRequest):
            c["trims"] += 1
            self.proto.reply_ok(ev.handle)
            return
        elif isinstance(ev, RequestRejected):
            c["rejected"] += 1
            self.server.last_rejection = ev.error
        elif isinstance(ev, Negotiated):
            c["negotiated"] += 1
            if self._hs_timer is not None:
                self._hs_timer.cancel()
                self._hs_timer = None
        elif isinstance(ev, OptionRefused):
            c["options_refused"] += 1
        elif isinstance(ev, Disconnect):
            c["disconnects"] += 1
        elif isinstance(ev, ProtocolFailed):
            c["protocol_errors"] += 1
            self.server.last_protocol_error = ev.error
            self.close(f"protocol error: {ev.error}")
            return
        if self.proto.outstanding > c["max_outstanding"]:
            c["max_outstanding"] = self.proto.outstanding

    def _done(self) -> None:
        if not self.closed:
            self._update()

    def _fail(self, handle: int, exc: BaseException) -> None:
        self.server.counters["io_errors"] += 1
        self.server.last_io_error = exc
        self.proto.reply_error(handle, errno_for(exc))

    def _read(self, ev: ReadRequest) -> None:
        bs = self.server.export.block_size
        if not ev.length:
            self.proto.reply_read(ev.handle, b"")
            return
        buf = bytearray(ev.length)

        def done(req: IoResult) -> None:
            if self.closed:
                return
            if req.error is not None:
                self._fail(ev.handle, req.error)
            else:
                self.server.counters["bytes_read"] += ev.length
                self.proto.reply_read(ev.handle, buf)
            self._done()

        try:
            self.server.device.submit_read(ev.offset // bs, ev.length // bs, buf, done)
        except Exception as e:
            self._fail(ev.handle, e)

    def _write(self, ev: WriteRequest) -> None:
        bs = self.server.export.block_size
        if not ev.length:
            self.proto.reply_ok(ev.handle)
            return

        def done(req: IoResult) -> None:
            if self.closed:
                return
            if req.error is not None:
                self._fail(ev.handle, req.error)
                self._done()
                return
            self.server.counters["bytes_written"] += ev.length
            if ev.fua:
                self.server.counters["fua"] += 1
                self._flush_cmd(ev.handle)
            else:
                self.proto.reply_ok(ev.handle)
            self._done()

        try:
            self.server.device.submit_write(ev.offset // bs, ev.data, done)
        except Exception as e:
            self._fail(ev.handle, e)

    def _flush_cmd(self, handle: int) -> None:
        def done(req: IoResult) -> None:
            if self.closed:
                return
            if _flush_ok(req.error):
                self.proto.reply_ok(handle)
            else:
                assert req.error is not None
                self._fail(handle, req.error)
            self._done()

        try:
            self.server.device.submit_flush(done)
        except Exception as e:
            self._fail(handle, e)

    # ----------------------------------------------------------------------- sending

    def _flush(self) -> None:
        data = self.proto.data_to_send()
        if data:
            self._out.append(memoryview(data))
            self._out_bytes += len(data)
        if not self._out:
            self._stop_waiting_writable()
            return
        progressed = False
        while self._out:
            try:
                n = self.sock.sendmsg(list(itertools.islice(self._out, 64)))
            except (BlockingIOError, InterruptedError):
                break
            except OSError as e:
                self.close(f"send failed: {e}")
                return
            progressed = progressed or n > 0
            self.server.counters["bytes_out"] += n
            self._out_bytes -= n
            while n:
                head = self._out[0]
                if len(head) <= n:
                    n -= len(head)
                    self._out.popleft()
                else:
                    self._out[0] = head[n:]
                    n = 0
        if self._out:
            self._wait_writable(progressed)
        else:
            self._stop_waiting_writable()

    def _wait_writable(self, progressed: bool) -> None:
        if self._ep is None:
            self._ep = select.epoll()
        if not self._waiting_writable:
            self._ep.register(self.sock.fileno(), select.EPOLLOUT)
            self.loop.add_reader(self._ep.fileno(), self._on_writable)
            self._waiting_writable = True
        if progressed or self._send_timer is None:
            if self._send_timer is not None:
                self._send_timer.cancel()
            self._send_timer = self.loop.call_later(self.server.send_timeout,
                                                    self._send_expired)

    def _stop_waiting_writable(self) -> None:
        if self._send_timer is not None:
            self._send_timer.cancel()
            self._send_timer = None
        if self._waiting_writable:
            assert self._ep is not None
            self.loop.remove_reader(self._ep.fileno())
            with contextlib.suppress(OSError):
                self._ep.unregister(self.sock.fileno())
            self._waiting_writable = False

    def _on_writable(self) -> None:
        if self._ep is not None:
            self._ep.poll(0)
        self._update()

    # -------------------------------------------------------------------- deadlines

    def _handshake_expired(self) -> None:
        self._hs_timer = None
        if not self.closed and not self.proto.transmitting:
            self.server.counters["handshake_timeouts"] += 1
            self.close(f"handshake not finished within {self.server.handshake_timeout:g} s")

    def _send_expired(self) -> None:
        self._send_timer = None
        if not self.closed and self._out:
            self.server.counters["send_timeouts"] += 1
            self.close(f"client took no reply data for {self.server.send_timeout:g} s")

    # ----------------------------------------------------------------------- closing

    def close(self, reason: str = "closed by the server") -> None:
        """Drop the connection now (outstanding device requests finish unseen)."""
        if self.closed:
            return
        self._set_reading(False)
        self._stop_waiting_writable()
        self.closed = True
        self.close_reason = reason
        for t in (self._hs_timer, self._send_timer):
            if t is not None:
                t.cancel()
        self._hs_timer = self._send_timer = None
        if self._ep is not None:
            self._ep.close()
            self._ep = None
        with contextlib.suppress(OSError):
            self.sock.close()
        self._out.clear()
        self.server._forget(self)


class NbdServer:
    """Serve ``device`` over NBD on the UNIX socket ``path`` inside ``loop``.

    The export is named ``name`` (the empty default name is accepted too); its minimum
    block size is the device's block size, so clients align their requests.
    ``max_inflight`` defaults to 64 requests per connection (above the iSCSI session's
    default queue depth of 32, so the session queue stays full).
    """

    def __init__(self, loop: Loop, path: str | os.PathLike[str], device: AsyncBlockDevice, *,
                 name: str = "", description: str = "", read_only: bool = False,
                 trim: bool = False, fua: bool = True,
                 preferred_block_size: int | None = None,
                 max_payload: int = DEFAULT_MAX_PAYLOAD, max_inflight: int = 64,
                 max_inflight_bytes: int = 64 << 20, max_output: int = 8 << 20,
                 max_connections: int = 16, handshake_timeout: float = 30.0,
                 send_timeout: float = 60.0, replace: bool = False) -> None:
        if max_inflight < 1 or max_inflight_bytes < 1 or max_output < 1:
            raise ValueError("max_inflight, max_inflight_bytes and max_output must be "
                             "positive")
        if handshake_timeout <= 0 or send_timeout <= 0:
            raise ValueError("handshake_timeout and send_timeout must be positive")
        bs = device.block_size
        self.loop = loop
        self.device = device
        self.export = NbdExport(
            size=device.capacity, name=name, block_size=bs,
            preferred_block_size=preferred_block_size or max(bs, 4096),
            max_payload=max_payload, read_only=read_only, trim=trim, fua=fua,
            multi_conn=True, description=description)
        self.max_inflight = max_inflight
        self.max_inflight_bytes = max_inflight_bytes
        self.max_output = max_output
        self.max_connections = max_connections
        self.handshake_timeout = handshake_timeout
        self.send_timeout = send_timeout
        self.connections: list[NbdConnection] = []
        self.counters: dict[str, int] = _Counts()
        self.last_rejection: Exception | None = None
        self.last_protocol_error: Exception | None = None
        self.last_io_error: BaseException | None = None
        self.closed = False
        self.path = Path(path)
        if len(os.fsencode(self.path)) > 107:
            raise NbdServerError(f"socket path {self.path} is too long for a UNIX socket "
                                 "(at most 107 bytes)")
        self._prepare_path(replace)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            sock.bind(os.fspath(self.path))
            sock.listen(max(8, max_connections))
        except OSError as e:
            sock.close()
            raise NbdServerError(f"cannot listen on {self.path}: {e}") from e
        self._sock = sock
        self.loop.add_reader(sock, self._on_accept)

    def _prepare_path(self, replace: bool) -> None:
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(st.st_mode):
            raise NbdServerError(f"{self.path} exists and is not a socket")
        if not replace:
            # a stale socket nobody listens on may go; a live one may not
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            probe.settimeout(1.0)
            try:
                probe.connect(os.fspath(self.path))
            except OSError as e:
                if e.errno not in (_errno.ECONNREFUSED, _errno.ENOENT):
                    raise NbdServerError(f"{self.path}: {e}") from e
            else:
                raise NbdServerError(f"{self.path} is in use by another server")
            finally:
                probe.close()
        self.path.unlink()

    def _on_accept(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self.counters["accept_errors"] += 1
                return
            if len(self.connections) >= self.max_connections:
                self.counters["refused"] += 1
                conn.close()
                continue
            conn.setblocking(False)
            self.counters["connections"] += 1
            self.connections.append(NbdConnection(self, conn))

    def _forget(self, conn: NbdConnection) -> None:
        with contextlib.suppress(ValueError):
            self.connections.remove(conn)

    @property
    def url(self) -> str:
        """``nbd+unix:///NAME?socket=PATH`` (the NBD URI form nbdinfo and qemu take)."""
        return f"nbd+unix:///{self.export.name}?socket={self.path}"

    def close(self) -> None:
        """Stop listening, drop every connection, remove the socket file (idempotent)."""
        if self.closed:
            return
        self.closed = True
        self.loop.remove_reader(self._sock)
        self._sock.close()
        for c in list(self.connections):
            c.close("server closed")
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def __enter__(self) -> NbdServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Counts(dict[str, int]):
    """A dict whose missing keys read as 0."""

    def __missing__(self, key: str) -> int:
        return 0


__all__ = ["AsyncBlockDevice", "IoResult", "NbdConnection", "NbdServer", "NbdServerError",
           "errno_for"]
