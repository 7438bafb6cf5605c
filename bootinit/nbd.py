"""NBD server protocol core: fixed newstyle handshake and transmission, sans-IO.

Follows the NBD protocol document (github.com/NetworkBlockDevice/nbd, ``doc/proto.md``),
cited below as *proto.md* with the section name:

* handshake: "Fixed newstyle negotiation" -- ``NBDMAGIC``, ``IHAVEOPT``, handshake flags
  ``FIXED_NEWSTYLE | NO_ZEROES``; the client's flags; then options, each answered with
  option replies (magic ``0x3e889045565a9``) except ``NBD_OPT_EXPORT_NAME``;
* options: ``EXPORT_NAME``, ``ABORT``, ``LIST``, ``INFO``, ``GO`` (``NBD_INFO_EXPORT``,
  ``NBD_INFO_NAME``, ``NBD_INFO_DESCRIPTION``, ``NBD_INFO_BLOCK_SIZE``); ``STARTTLS``,
  ``STRUCTURED_REPLY``, meta contexts and extended headers are refused with
  ``NBD_REP_ERR_UNSUP`` ("NOTLS mode"; "clients SHOULD be prepared to also handle
  NBD_REP_ERR_UNSUP" for structured replies), so every reply is a simple reply;
* transmission: requests (magic ``0x25609513``) ``READ``, ``WRITE``, ``FLUSH``, ``TRIM``
  (only when the export advertises ``NBD_FLAG_SEND_TRIM``) and ``DISC``; simple replies
  (magic ``0x67446698``) in any order, matched by handle ("Replies need not be sent in the
  same order as requests").

The core never touches a socket or a clock: :meth:`NbdServerProtocol.receive` takes bytes
and returns events, the caller executes the I/O and answers with
:meth:`~NbdServerProtocol.reply_read`, :meth:`~NbdServerProtocol.reply_ok` or
:meth:`~NbdServerProtocol.reply_error`, and drains :meth:`~NbdServerProtocol.data_to_send`.
Deadlines (handshake time, send stalls) belong to the glue (:mod:`bootinit.nbd_server`).

Invalid requests that keep the byte stream in sync are answered by the core itself with
the errno proto.md asks for ("Error values", "Block size constraints"): unaligned to the
minimum block size, beyond the export, longer than the maximum payload (32 MiB by
default), unknown commands or flags -> ``EINVAL``; writes past the end -> ``ENOSPC``;
writes/trims on a read-only export -> ``EPERM``. A write payload of a rejected write is
read and discarded, never buffered. The caller sees them as :class:`RequestRejected`
events carrying a typed :class:`NbdRequestError`. Violations that break framing (bad
request or option magic, unknown client flags, an unknown name with
``NBD_OPT_EXPORT_NAME``) end the session: :class:`ProtocolFailed` carries a typed
:class:`NbdProtocolError` and the caller must drop the connection ("hard disconnect").
"""

from __future__ import annotations

import enum
import struct
from collections import deque
from dataclasses import dataclass, field

# ----------------------------------------------------------------------- constants

NBDMAGIC = 0x4E42444D41474943  # "NBDMAGIC"
IHAVEOPT = 0x49484156454F5054  # "IHAVEOPT"
OPTION_REPLY_MAGIC = 0x3E889045565A9
REQUEST_MAGIC = 0x25609513
SIMPLE_REPLY_MAGIC = 0x67446698

#: Default maximum payload of one request (proto.md "Block size constraints": a
#: server SHOULD accept at least 2^25 bytes; a client SHOULD NOT send more).
DEFAULT_MAX_PAYLOAD = 32 << 20
#: Longest option data the core buffers (an INFO/GO with a 4096-byte name and every
#: info type fits many times over); longer option data is skipped, not stored.
MAX_OPTION_DATA = 64 << 10
#: Longest string (export name) proto.md allows ("Conventions": at most 4096 bytes).
MAX_STRING = 4096


class HandshakeFlag(enum.IntFlag):
    """Server handshake flags (proto.md "Handshake flags")."""

    FIXED_NEWSTYLE = 1 << 0
    NO_ZEROES = 1 << 1


class ClientFlag(enum.IntFlag):
    """Client flags (proto.md "Client flags")."""

    C_FIXED_NEWSTYLE = 1 << 0
    C_NO_ZEROES = 1 << 1


class TransmissionFlag(enum.IntFlag):
    """Transmission flags (proto.md "Transmission flags")."""

    HAS_FLAGS = 1 << 0
    READ_ONLY = 1 << 1
    SEND_FLUSH = 1 << 2
    SEND_FUA = 1 << 3
    ROTATIONAL = 1 << 4
    SEND_TRIM = 1 << 5
    SEND_WRITE_ZEROES = 1 << 6
    SEND_DF = 1 << 7
    CAN_MULTI_CONN = 1 << 8


class Opt(enum.IntEnum):
    """Option types (proto.md "Option types")."""

    EXPORT_NAME = 1
    ABORT = 2
    LIST = 3
    PEEK_EXPORT = 4
    STARTTLS = 5
    INFO = 6
    GO = 7
    STRUCTURED_REPLY = 8
    LIST_META_CONTEXT = 9
    SET_META_CONTEXT = 10
    EXTENDED_HEADERS = 11


_REP_ERR = 1 << 31


class Rep(enum.IntEnum):
    """Option reply types (proto.md "Option reply types")."""

    ACK = 1
    SERVER = 2
    INFO = 3
    META_CONTEXT = 4
    ERR_UNSUP = _REP_ERR + 1
    ERR_POLICY = _REP_ERR + 2
    ERR_INVALID = _REP_ERR + 3
    ERR_PLATFORM = _REP_ERR + 4
    ERR_TLS_REQD = _REP_ERR + 5
    ERR_UNKNOWN = _REP_ERR + 6
    ERR_SHUTDOWN = _REP_ERR + 7
    ERR_BLOCK_SIZE_REQD = _REP_ERR + 8
    ERR_TOO_BIG = _REP_ERR + 9


class Info(enum.IntEnum):
    """``NBD_REP_INFO`` types (proto.md ``NBD_OPT_INFO``/``NBD_OPT_GO``)."""

    EXPORT = 0
    NAME = 1
    DESCRIPTION = 2
    BLOCK_SIZE = 3


class Cmd(enum.IntEnum):
    """Request types (proto.md "Request types")."""

    READ = 0
    WRITE = 1
    DISC = 2
    FLUSH = 3
    TRIM = 4
    CACHE = 5
    WRITE_ZEROES = 6
    BLOCK_STATUS = 7
    RESIZE = 8


class CmdFlag(enum.IntFlag):
    """Command flags (proto.md "Command flags")."""

    FUA = 1 << 0
    NO_HOLE = 1 << 1
    DF = 1 << 2
    REQ_ONE = 1 << 3
    FAST_ZERO = 1 << 4
    PAYLOAD_LEN = 1 << 5


class Errno(enum.IntEnum):
    """Error values a reply may carry (proto.md "Error values")."""

    EPERM = 1
    EIO = 5
    ENOMEM = 12
    EINVAL = 22
    ENOSPC = 28
    EOVERFLOW = 75
    ENOTSUP = 95
    ESHUTDOWN = 108


# --------------------------------------------------------------------------- errors


class NbdError(Exception):
    """Base of the NBD errors."""


class NbdProtocolError(NbdError):
    """The client broke the protocol in a way that ends the session (hard disconnect).

    ``field`` names what was wrong, ``value`` what was received.
    """

    def __init__(self, message: str, field: str, value: object) -> None:
        super().__init__(message)
        self.field = field
        self.value = value


class BadMagic(NbdProtocolError):
    """A request or option did not start with its magic number."""


class BadClientFlags(NbdProtocolError):
    """The client flags hold a bit the server did not offer (proto.md "Client flags":
    the server MUST drop the connection)."""


class UnknownExportName(NbdProtocolError):
    """``NBD_OPT_EXPORT_NAME`` named an export that does not exist (proto.md: the server
    MUST terminate the session)."""


class OversizedOption(NbdProtocolError):
    """``NBD_OPT_EXPORT_NAME`` with a name longer than any allowed string."""


class NbdRequestError(NbdError):
    """A request the core answered with an error reply itself (the session goes on).

    ``handle`` is the request's handle, ``errno`` the :class:`Errno` sent, ``field`` and
    ``value`` what was wrong.
    """

    def __init__(self, message: str, handle: int, errno: Errno, field: str,
                 value: object) -> None:
        super().__init__(message)
        self.handle = handle
        self.errno = errno
        self.field = field
        self.value = value


class UnalignedRequest(NbdRequestError):
    """Offset or length not a multiple of the minimum block size (``EINVAL``)."""


class OutOfRangeRequest(NbdRequestError):
    """Offset + length beyond the export (``EINVAL``; ``ENOSPC`` for writes)."""


class OversizedRequest(NbdRequestError):
    """Payload longer than the maximum block payload size (``EINVAL``)."""


class UnsupportedCommand(NbdRequestError):
    """A request type this export does not offer (``EINVAL``)."""


class InvalidFlags(NbdRequestError):
    """Command flags not valid for the request (``EINVAL``)."""


class InvalidRequest(NbdRequestError):
    """Reserved fields not zero, e.g. a FLUSH with an offset (``EINVAL``)."""


class ReadOnlyExport(NbdRequestError):
    """A write or trim on a read-only export (``EPERM``)."""


# --------------------------------------------------------------------------- export


def _is_pow2(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


@dataclass(frozen=True)
class NbdExport:
    """What one export offers (proto.md "Block size constraints", "Transmission flags").

    ``block_size`` is the minimum block size (the device's logical block size: requests
    must be aligned to it), ``preferred_block_size`` the preferred one, ``max_payload``
    the maximum block payload size. ``trim`` advertises ``NBD_FLAG_SEND_TRIM``, ``fua``
    ``NBD_FLAG_SEND_FUA``, ``multi_conn`` ``NBD_FLAG_CAN_MULTI_CONN`` (right when the
    server keeps no cache of its own, so a flush on one connection covers all).
    """

    size: int
    name: str = ""
    block_size: int = 512
    preferred_block_size: int = 4096
    max_payload: int = DEFAULT_MAX_PAYLOAD
    read_only: bool = False
    trim: bool = False
    fua: bool = True
    multi_conn: bool = True
    description: str = ""

    def __post_init__(self) -> None:
        if not 0 <= self.size < 1 << 64:
            raise ValueError(f"export size {self.size} is not a 64-bit unsigned value")
        if not _is_pow2(self.block_size) or self.block_size > 1 << 16:
            raise ValueError(f"block_size {self.block_size} must be a power of 2 from 1 to "
                             "65536 (proto.md minimum block size)")
        p = self.preferred_block_size
        if not _is_pow2(p) or p < max(self.block_size, 512) or p > 1 << 31:
            raise ValueError(f"preferred_block_size {p} must be a power of 2, at least "
                             f"max(block_size, 512) = {max(self.block_size, 512)}")
        m = self.max_payload
        if not 0 < m <= 0xFFFFFFFF or (m != 0xFFFFFFFF and m % self.block_size) \
                or m < min(p, self.size):
            raise ValueError(f"max_payload {m} must be a multiple of block_size "
                             f"{self.block_size}, at least min(preferred, size) and at "
                             "most 2^32 - 1")
        for what, text in (("name", self.name), ("description", self.description)):
            raw = text.encode()
            if len(raw) > MAX_STRING or "\0" in text:
                raise ValueError(f"export {what} {text[:40]!r}: at most {MAX_STRING} UTF-8 "
                                 "bytes and no NUL")

    @property
    def flags(self) -> TransmissionFlag:
        """The transmission flags sent for this export."""
        f = TransmissionFlag.HAS_FLAGS | TransmissionFlag.SEND_FLUSH
        if self.read_only:
            f |= TransmissionFlag.READ_ONLY
        if self.fua:
            f |= TransmissionFlag.SEND_FUA
        if self.trim:
            f |= TransmissionFlag.SEND_TRIM
        if self.multi_conn:
            f |= TransmissionFlag.CAN_MULTI_CONN
        return f


# --------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class Negotiated:
    """Option haggling ended; the transmission phase begins for ``export``."""

    export: NbdExport
    option: Opt
    no_zeroes: bool


@dataclass(frozen=True, slots=True)
class OptionRefused:
    """An option was answered with an error reply (informational)."""

    option: int
    reply: Rep
    message: str


@dataclass(frozen=True, slots=True)
class ReadRequest:
    """``NBD_CMD_READ``: answer with :meth:`NbdServerProtocol.reply_read`."""

    handle: int
    offset: int
    length: int
    flags: CmdFlag


@dataclass(frozen=True, slots=True)
class WriteRequest:
    """``NBD_CMD_WRITE`` with its whole payload; answer with ``reply_ok`` (after the data
    is persistent when ``fua``)."""

    handle: int
    offset: int
    data: bytearray = field(repr=False)
    fua: bool

    @property
    def length(self) -> int:
        """Payload length."""
        return len(self.data)


@dataclass(frozen=True, slots=True)
class FlushRequest:
    """``NBD_CMD_FLUSH``: answer once every write already answered is persistent."""

    handle: int


@dataclass(frozen=True, slots=True)
class TrimRequest:
    """``NBD_CMD_TRIM`` (a hint: answering OK without discarding is allowed)."""

    handle: int
    offset: int
    length: int
    fua: bool


@dataclass(frozen=True, slots=True)
class RequestRejected:
    """The core answered a request with an error reply already."""

    error: NbdRequestError


@dataclass(frozen=True, slots=True)
class Disconnect:
    """Soft disconnect: ``NBD_OPT_ABORT`` (acknowledged) or ``NBD_CMD_DISC``. Finish the
    outstanding requests, send their replies, then close (:attr:`finished`)."""

    reason: str


@dataclass(frozen=True, slots=True)
class ProtocolFailed:
    """Hard disconnect required: drop the connection now."""

    error: NbdProtocolError


Event = (Negotiated | OptionRefused | ReadRequest | WriteRequest | FlushRequest | TrimRequest
         | RequestRejected | Disconnect | ProtocolFailed)


class State(enum.Enum):
    """Where the connection is."""

    CLIENT_FLAGS = "client flags"
    OPTIONS = "options"
    TRANSMISSION = "transmission"
    DISCONNECTING = "disconnecting"
    CLOSED = "closed"


# ------------------------------------------------------------------------- protocol

_OPT_HDR = struct.Struct(">QII")
_OPT_REPLY = struct.Struct(">QIII")
_REQUEST = struct.Struct(">IHHQQI")
_REPLY = struct.Struct(">IIQ")
_GREETING = struct.pack(">QQH", NBDMAGIC, IHAVEOPT,
                        HandshakeFlag.FIXED_NEWSTYLE | HandshakeFlag.NO_ZEROES)

_ALLOWED_FLAGS = {Cmd.READ: CmdFlag.FUA, Cmd.WRITE: CmdFlag.FUA, Cmd.FLUSH: CmdFlag.FUA,
                  Cmd.TRIM: CmdFlag.FUA}


@dataclass(slots=True)
class _Pending:
    kind: Cmd
    length: int


class _Need(enum.Enum):
    CLIENT_FLAGS = 4
    OPTION_HEADER = _OPT_HDR.size
    REQUEST_HEADER = _REQUEST.size


class NbdServerProtocol:
    """One NBD server connection as a pure state machine (see the module doc).

    ::

        proto = NbdServerProtocol(NbdExport(size=dev.capacity, block_size=512))
        sock.send(proto.data_to_send())           # the greeting
        for ev in proto.receive(sock.recv(65536)):
            if isinstance(ev, ReadRequest): ... later proto.reply_read(ev.handle, data)
        sock.send(proto.data_to_send())
    """

    def __init__(self, export: NbdExport, *, max_outstanding: int | None = None,
                 max_outstanding_bytes: int | None = None) -> None:
        self.export = export
        #: Stop parsing requests while this many are outstanding (None: no limit); the
        #: rest of the input waits in :attr:`backlog` until :meth:`receive` is called
        #: again (``receive(b"")`` resumes).
        self.max_outstanding = max_outstanding
        #: The same for payload bytes of outstanding reads and writes.
        self.max_outstanding_bytes = max_outstanding_bytes
        #: Set by the caller to hold back new requests for its own reasons (e.g. too
        #: many reply bytes not taken by the client yet).
        self.paused = False
        self._backlog = b""
        self.state = State.CLIENT_FLAGS
        self.client_flags = ClientFlag(0)
        self.error: NbdProtocolError | None = None
        self._out: deque[bytes | bytearray | memoryview] = deque([_GREETING])
        self._out_bytes = len(_GREETING)
        self._hdr = bytearray()
        self._need: _Need | None = _Need.CLIENT_FLAGS
        # option data being collected / skipped
        self._opt: int = 0
        self._opt_data = bytearray()
        self._opt_left = 0
        self._opt_skip = False
        # write payload being collected / discarded
        self._payload: bytearray | None = None
        self._payload_filled = 0
        self._discard_left = 0
        self._write_req: tuple[int, int, bool] | None = None  # handle, offset, fua
        self._rejected_write: NbdRequestError | None = None
        self._pending: dict[int, list[_Pending]] = {}
        self._outstanding = 0
        self._outstanding_bytes = 0
        #: Requests received, by type name, and rejected requests.
        self.stats: dict[str, int] = {}

    # ------------------------------------------------------------------ properties

    @property
    def outstanding(self) -> int:
        """Requests handed to the caller and not answered yet."""
        return self._outstanding

    @property
    def outstanding_bytes(self) -> int:
        """Payload bytes of the outstanding reads and writes."""
        return self._outstanding_bytes

    @property
    def backlog(self) -> int:
        """Received bytes not parsed yet because of the outstanding limits."""
        return len(self._backlog)

    @property
    def throttled(self) -> bool:
        """The outstanding limits are reached (or :attr:`paused`): no new request is
        parsed now."""
        mo, mb = self.max_outstanding, self.max_outstanding_bytes
        return self.paused or (mo is not None and self._outstanding >= mo) or \
            (mb is not None and self._outstanding_bytes >= mb)

    @property
    def transmitting(self) -> bool:
        """In the transmission phase (requests may arrive)."""
        return self.state is State.TRANSMISSION

    @property
    def finished(self) -> bool:
        """Nothing more will happen: closed, or disconnecting with every reply queued.
        The caller closes the connection once :meth:`data_to_send` is drained."""
        return self.state is State.CLOSED or (
            self.state is State.DISCONNECTING and self._outstanding == 0)

    def pending_output(self) -> int:
        """Bytes queued for :meth:`data_to_send`."""
        return self._out_bytes

    def data_to_send(self) -> bytes:
        """Everything queued for the client, as one buffer (empty when nothing is)."""
        if not self._out:
            return b""
        data = b"".join(self._out)
        self._out.clear()
        self._out_bytes = 0
        return data

    # --------------------------------------------------------------------- replies

    def _take(self, handle: int, read: bool | None, length: int | None = None) -> _Pending:
        lst = self._pending.get(handle)
        if not lst:
            raise ValueError(f"no outstanding request with handle 0x{handle:x}")
        for i, p in enumerate(lst):
            if (read is None or (p.kind is Cmd.READ) == read) and \
                    (length is None or p.length == length):
                del lst[i]
                if not lst:
                    del self._pending[handle]
                self._outstanding -= 1
                if p.kind in (Cmd.READ, Cmd.WRITE):
                    self._outstanding_bytes -= p.length
                return p
        kinds = ", ".join(p.kind.name for p in lst)
        raise ValueError(f"handle 0x{handle:x} is outstanding as {kinds}, not "
                         f"{'READ' if read else 'a command without read data'}")

    def _queue(self, *chunks: bytes | bytearray | memoryview) -> None:
        if self.state is State.CLOSED:
            return
        for c in chunks:
            if len(c):
                self._out.append(c)
                self._out_bytes += len(c)

    def reply_read(self, handle: int, data: bytes | bytearray | memoryview) -> None:
        """Answer an outstanding READ with its data (simple reply, error 0)."""
        view = memoryview(data).cast("B")
        # validate before taking the request off the books
        lst = self._pending.get(handle, [])
        lengths = [p.length for p in lst if p.kind is Cmd.READ]
        if lengths and len(view) not in lengths:
            raise ValueError(f"read reply for handle 0x{handle:x} has {len(view)} bytes, "
                             f"the request asked for {lengths[0]}")
        self._take(handle, read=True, length=len(view))
        self._queue(_REPLY.pack(SIMPLE_REPLY_MAGIC, 0, handle), view)

    def reply_ok(self, handle: int) -> None:
        """Answer an outstanding WRITE, FLUSH or TRIM with success."""
        self._take(handle, read=False)
        self._queue(_REPLY.pack(SIMPLE_REPLY_MAGIC, 0, handle))

    def reply_error(self, handle: int, errno: int) -> None:
        """Answer an outstanding request with an error (one of :class:`Errno`; a READ
        error carries no payload, proto.md "Simple reply message")."""
        try:
            e = Errno(errno)
        except ValueError:
            raise ValueError(f"errno {errno} is not an NBD error value "
                             f"({', '.join(f'{x.name}={x.value}' for x in Errno)})") from None
        self._take(handle, read=None)
        self._queue(_REPLY.pack(SIMPLE_REPLY_MAGIC, int(e), handle))

    # --------------------------------------------------------------------- receive

    def receive(self, data: bytes | bytearray | memoryview) -> list[Event]:
        """Feed bytes from the client; returns the events they complete (in order).

        Bytes arriving after a disconnect (or a protocol failure) are ignored. While
        :attr:`throttled`, whole requests are not parsed: the input is kept and parsed
        by a later call (``receive(b"")`` once replies went out).
        """
        events: list[Event] = []
        if self._backlog:
            data = self._backlog + bytes(data)
            self._backlog = b""
        mv = memoryview(data).cast("B")
        i, n = 0, len(mv)
        while i < n and self.state not in (State.DISCONNECTING, State.CLOSED):
            if self._need is _Need.REQUEST_HEADER and not self._hdr and not \
                    self._discard_left and self._payload is None and self.throttled:
                self._backlog = bytes(mv[i:])
                break
            if self._discard_left:
                k = min(self._discard_left, n - i)
                self._discard_left -= k
                i += k
                if not self._discard_left:
                    self._finish_discard(events)
                continue
            if self._payload is not None:
                k = min(len(self._payload) - self._payload_filled, n - i)
                self._payload[self._payload_filled:self._payload_filled + k] = mv[i:i + k]
                self._payload_filled += k
                i += k
                if self._payload_filled == len(self._payload):
                    self._finish_write(events)
                continue
            if self._opt_left:
                k = min(self._opt_left, n - i)
                if not self._opt_skip:
                    self._opt_data += mv[i:i + k]
                self._opt_left -= k
                i += k
                if not self._opt_left:
                    self._option_complete(events)
                continue
            need = self._need
            assert need is not None
            k = min(need.value - len(self._hdr), n - i)
            self._hdr += mv[i:i + k]
            i += k
            if len(self._hdr) == need.value:
                hdr = bytes(self._hdr)
                self._hdr.clear()
                if need is _Need.CLIENT_FLAGS:
                    self._on_client_flags(hdr, events)
                elif need is _Need.OPTION_HEADER:
                    self._on_option_header(hdr, events)
                else:
                    self._on_request(hdr, events)
        return events

    def _fail(self, err: NbdProtocolError, events: list[Event]) -> None:
        self.error = err
        self.state = State.CLOSED
        self._backlog = b""
        self._out.clear()
        self._out_bytes = 0
        events.append(ProtocolFailed(err))

    # -------------------------------------------------------------------- handshake

    def _on_client_flags(self, hdr: bytes, events: list[Event]) -> None:
        (flags,) = struct.unpack(">I", hdr)
        known = ClientFlag.C_FIXED_NEWSTYLE | ClientFlag.C_NO_ZEROES
        if flags & ~int(known):
            self._fail(BadClientFlags(f"client flags 0x{flags:08x} hold bits the server did "
                                      f"not offer (known: 0x{int(known):x})",
                                      "client flags", flags), events)
            return
        self.client_flags = ClientFlag(flags)
        self.state = State.OPTIONS
        self._need = _Need.OPTION_HEADER

    def _on_option_header(self, hdr: bytes, events: list[Event]) -> None:
        magic, opt, length = _OPT_HDR.unpack(hdr)
        if magic != IHAVEOPT:
            self._fail(BadMagic(f"option magic 0x{magic:016x}, expected IHAVEOPT "
                                f"0x{IHAVEOPT:016x}", "option magic", magic), events)
            return
        self._opt = opt
        self._opt_data = bytearray()
        self._opt_skip = length > MAX_OPTION_DATA
        if self._opt_skip and opt == Opt.EXPORT_NAME:
            self._fail(OversizedOption(f"NBD_OPT_EXPORT_NAME with {length} bytes of name "
                                       f"(at most {MAX_STRING})", "option length", length),
                       events)
            return
        self._opt_left = length
        if not length:
            self._option_complete(events)

    def _option_reply(self, rep: Rep, data: bytes = b"") -> None:
        self._queue(_OPT_REPLY.pack(OPTION_REPLY_MAGIC, self._opt, int(rep), len(data)), data)

    def _refuse(self, rep: Rep, message: str, events: list[Event]) -> None:
        self._option_reply(rep, message.encode())
        events.append(OptionRefused(self._opt, rep, message))

    def _name_ok(self, raw: bytes) -> str | None:
        try:
            name = raw.decode()
        except UnicodeDecodeError:
            return None
        return None if "\0" in name else name

    def _matches(self, name: str) -> bool:
        return name in ("", self.export.name)

    def _option_complete(self, events: list[Event]) -> None:
        opt, data = self._opt, bytes(self._opt_data)
        self._opt_data = bytearray()
        if self._opt_skip:
            self._refuse(Rep.ERR_TOO_BIG, f"option data longer than {MAX_OPTION_DATA} bytes",
                         events)
            return
        key = f"option_{Opt(opt).name.lower()}" if opt in Opt._value2member_map_ \
            else f"option_{opt}"
        self.stats[key] = self.stats.get(key, 0) + 1
        if opt == Opt.EXPORT_NAME:
            name = self._name_ok(data)
            if name is None or not self._matches(name):
                self._fail(UnknownExportName(f"NBD_OPT_EXPORT_NAME {data[:64]!r}: no such "
                                             "export", "export name", data), events)
                return
            no_zeroes = bool(self.client_flags & ClientFlag.C_NO_ZEROES)
            self._queue(struct.pack(">QH", self.export.size, int(self.export.flags)),
                        b"" if no_zeroes else bytes(124))
            self._enter_transmission(Opt.EXPORT_NAME, events)
        elif opt == Opt.ABORT:
            self._option_reply(Rep.ACK)
            self.state = State.DISCONNECTING
            events.append(Disconnect("NBD_OPT_ABORT"))
        elif opt == Opt.LIST:
            if data:
                self._refuse(Rep.ERR_INVALID, "NBD_OPT_LIST carries no data", events)
                return
            raw = self.export.name.encode()
            self._option_reply(Rep.SERVER, struct.pack(">I", len(raw)) + raw
                               + self.export.description.encode())
            self._option_reply(Rep.ACK)
        elif opt in (Opt.INFO, Opt.GO):
            self._info_go(Opt(opt), data, events)
        elif opt == Opt.STRUCTURED_REPLY:
            if data:
                self._refuse(Rep.ERR_INVALID, "NBD_OPT_STRUCTURED_REPLY carries no data",
                             events)
            else:
                self._refuse(Rep.ERR_UNSUP, "structured replies are not supported", events)
        elif opt == Opt.STARTTLS:
            self._refuse(Rep.ERR_UNSUP, "TLS is not supported", events)
        else:
            self._refuse(Rep.ERR_UNSUP, f"option {opt} is not supported", events)

    def _info_go(self, opt: Opt, data: bytes, events: list[Event]) -> None:
        # proto.md NBD_OPT_INFO / NBD_OPT_GO: u32 name length, name, u16 count, u16[count]
        if len(data) < 6:
            self._refuse(Rep.ERR_INVALID, f"{opt.name} data of {len(data)} bytes is too short",
                         events)
            return
        (nlen,) = struct.unpack_from(">I", data, 0)
        if nlen > len(data) - 6:
            self._refuse(Rep.ERR_INVALID, f"{opt.name} name length {nlen} exceeds the data",
                         events)
            return
        (count,) = struct.unpack_from(">H", data, 4 + nlen)
        if len(data) != 4 + nlen + 2 + 2 * count:
            self._refuse(Rep.ERR_INVALID, f"{opt.name} with {count} info requests has "
                         f"{len(data)} bytes of data", events)
            return
        name = self._name_ok(data[4:4 + nlen])
        if name is None:
            self._refuse(Rep.ERR_INVALID, f"{opt.name}: export name is not a valid string",
                         events)
            return
        if not self._matches(name):
            self._refuse(Rep.ERR_UNKNOWN, f"no export named {name!r}", events)
            return
        wanted = set(struct.unpack_from(f">{count}H", data, 4 + nlen + 2))
        ex = self.export
        self._option_reply(Rep.INFO, struct.pack(">HQH", Info.EXPORT, ex.size, int(ex.flags)))
        if Info.NAME in wanted:
            self._option_reply(Rep.INFO, struct.pack(">H", Info.NAME) + ex.name.encode())
        if Info.DESCRIPTION in wanted and ex.description:
            self._option_reply(Rep.INFO,
                               struct.pack(">H", Info.DESCRIPTION) + ex.description.encode())
        # Sent even when not asked for: proto.md allows it, and clients then know the
        # minimum block size (requests not aligned to it get EINVAL).
        self._option_reply(Rep.INFO, struct.pack(">HIII", Info.BLOCK_SIZE, ex.block_size,
                                                 ex.preferred_block_size, ex.max_payload))
        self._option_reply(Rep.ACK)
        if opt is Opt.GO:
            self._enter_transmission(Opt.GO, events)

    def _enter_transmission(self, opt: Opt, events: list[Event]) -> None:
        self.state = State.TRANSMISSION
        self._need = _Need.REQUEST_HEADER
        events.append(Negotiated(self.export, opt,
                                 bool(self.client_flags & ClientFlag.C_NO_ZEROES)))

    # ----------------------------------------------------------------- transmission

    def _reject(self, err: NbdRequestError, events: list[Event]) -> None:
        self._queue(_REPLY.pack(SIMPLE_REPLY_MAGIC, int(err.errno), err.handle))
        self.stats["rejected"] = self.stats.get("rejected", 0) + 1
        events.append(RequestRejected(err))

    def _track(self, handle: int, kind: Cmd, length: int) -> None:
        self._pending.setdefault(handle, []).append(_Pending(kind, length))
        self._outstanding += 1
        if kind in (Cmd.READ, Cmd.WRITE):
            self._outstanding_bytes += length

    def _check_range(self, cmd: Cmd, handle: int, offset: int, length: int,
                     flags: int) -> NbdRequestError | None:
        ex = self.export
        name = cmd.name
        allowed = _ALLOWED_FLAGS.get(cmd, CmdFlag(0))
        if not ex.fua:
            allowed &= ~CmdFlag.FUA
        if flags & ~int(allowed):
            return InvalidFlags(f"{name} with command flags 0x{flags:x} (allowed 0x"
                                f"{int(allowed):x})", handle, Errno.EINVAL, "flags", flags)
        if ex.read_only and cmd in (Cmd.WRITE, Cmd.TRIM):
            return ReadOnlyExport(f"{name} on a read-only export", handle, Errno.EPERM,
                                  "type", name)
        if offset + length > ex.size:
            errno = Errno.ENOSPC if cmd is Cmd.WRITE else Errno.EINVAL
            return OutOfRangeRequest(f"{name} of {length} bytes at offset {offset} ends past "
                                     f"the export size {ex.size}", handle, errno,
                                     "offset+length", offset + length)
        bs = ex.block_size
        if offset % bs or length % bs:
            what, val = ("offset", offset) if offset % bs else ("length", length)
            return UnalignedRequest(f"{name} {what} {val} is not a multiple of the minimum "
                                    f"block size {bs}", handle, Errno.EINVAL, what, val)
        if cmd in (Cmd.READ, Cmd.WRITE) and length > ex.max_payload:
            return OversizedRequest(f"{name} of {length} bytes exceeds the maximum payload "
                                    f"{ex.max_payload}", handle, Errno.EINVAL, "length",
                                    length)
        return None

    def _on_request(self, hdr: bytes, events: list[Event]) -> None:
        magic, flags, typ, handle, offset, length = _REQUEST.unpack(hdr)
        if magic != REQUEST_MAGIC:
            self._fail(BadMagic(f"request magic 0x{magic:08x}, expected 0x{REQUEST_MAGIC:08x}",
                                "request magic", magic), events)
            return
        try:
            cmd = Cmd(typ)
        except ValueError:
            cmd = None
        key = cmd.name.lower() if cmd is not None else f"type_{typ}"
        self.stats[key] = self.stats.get(key, 0) + 1
        if cmd is Cmd.DISC:
            self.state = State.DISCONNECTING
            events.append(Disconnect("NBD_CMD_DISC"))
            return
        if cmd is Cmd.WRITE:
            err = self._check_range(cmd, handle, offset, length, flags)
            if err is not None:
                # consume the payload without storing it, then answer
                self._rejected_write = err
                self._discard_left = length
                if not length:
                    self._finish_discard(events)
                return
            fua = bool(flags & CmdFlag.FUA)
            if not length:
                self._track(handle, Cmd.WRITE, 0)
                events.append(WriteRequest(handle, offset, bytearray(), fua))
                return
            self._write_req = (handle, offset, fua)
            self._payload = bytearray(length)
            self._payload_filled = 0
            return
        if cmd is Cmd.READ:
            err = self._check_range(cmd, handle, offset, length, flags)
            if err is not None:
                self._reject(err, events)
                return
            self._track(handle, Cmd.READ, length)
            events.append(ReadRequest(handle, offset, length, CmdFlag(flags)))
            return
        if cmd is Cmd.FLUSH:
            allowed = CmdFlag.FUA if self.export.fua else CmdFlag(0)
            if flags & ~int(allowed):
                self._reject(InvalidFlags(f"FLUSH with command flags 0x{flags:x}", handle,
                                          Errno.EINVAL, "flags", flags), events)
                return
            if offset or length:
                what, val = ("offset", offset) if offset else ("length", length)
                self._reject(InvalidRequest(f"FLUSH with {what} {val} (reserved, must be 0)",
                                            handle, Errno.EINVAL, what, val), events)
                return
            self._track(handle, Cmd.FLUSH, 0)
            events.append(FlushRequest(handle))
            return
        if cmd is Cmd.TRIM and self.export.trim:
            err = self._check_range(cmd, handle, offset, length, flags)
            if err is not None:
                self._reject(err, events)
                return
            self._track(handle, Cmd.TRIM, length)
            events.append(TrimRequest(handle, offset, length, bool(flags & CmdFlag.FUA)))
            return
        name = cmd.name if cmd is not None else str(typ)
        self._reject(UnsupportedCommand(f"request type {name} is not supported by this "
                                        "export", handle, Errno.EINVAL, "type", typ), events)

    def _finish_write(self, events: list[Event]) -> None:
        assert self._payload is not None and self._write_req is not None
        handle, offset, fua = self._write_req
        data = self._payload
        self._payload = None
        self._write_req = None
        self._track(handle, Cmd.WRITE, len(data))
        events.append(WriteRequest(handle, offset, data, fua))

    def _finish_discard(self, events: list[Event]) -> None:
        err = self._rejected_write
        self._rejected_write = None
        if err is not None:
            self._reject(err, events)


__all__ = [
    "DEFAULT_MAX_PAYLOAD", "IHAVEOPT", "MAX_OPTION_DATA", "NBDMAGIC", "OPTION_REPLY_MAGIC",
    "REQUEST_MAGIC", "SIMPLE_REPLY_MAGIC", "BadClientFlags", "BadMagic", "ClientFlag", "Cmd",
    "CmdFlag", "Disconnect", "Errno", "Event", "FlushRequest", "HandshakeFlag", "Info",
    "InvalidFlags", "InvalidRequest", "NbdError", "NbdExport", "NbdProtocolError",
    "NbdRequestError", "NbdServerProtocol", "Negotiated", "Opt", "OptionRefused",
    "OutOfRangeRequest", "OversizedOption", "OversizedRequest", "ProtocolFailed",
    "ReadOnlyExport", "ReadRequest", "Rep", "RequestRejected", "State", "TransmissionFlag",
    "TrimRequest", "UnalignedRequest", "UnknownExportName", "UnsupportedCommand",
    "WriteRequest",
]
