"""Resumable iSCSI receive parser (RFC 7143 §11.1, §13.1).

TCP delivers the byte stream in arbitrary chunks; :meth:`PduParser.feed` takes
each chunk as it comes and returns the PDUs it completes.  The parser walks

    BHS (48) -> AHS (TotalAHSLength*4) -> header digest (4) -> data + padding
    -> data digest (4)

keeping its place between calls, so a PDU may arrive one byte at a time.

Data-In placement (the hot path): the session registers a writable buffer per
Initiator Task Tag with :meth:`PduParser.place`; the payload of each Data-In for
that ITT is copied straight from the TCP chunk into ``buffer[BufferOffset:]``
and the :class:`~bootinit.iscsi.pdu.DataIn` handed back has ``placed=True`` and
no data.  That is the only copy of the payload.  The PDU that carries the task's
status (a SCSI Response, or a Data-In with the S bit, RFC 7143 §11.7.4) removes the
placement as it is parsed, so a later PDU for that ITT never reaches the buffer even
when several chunks are parsed before the session sees the status.

Errors:

* fatal (raised; the connection must be dropped, the parser refuses further
  input): :class:`HeaderDigestError`, :class:`DataSegmentTooLong`,
  :class:`PlacementError`, :class:`PduFormatError`.
* recoverable (returned in the list *in place of the PDU*):
  :class:`DataDigestError` with ``.pdu`` set, so the session can recover per
  RFC 7143 §7.8.1 while parsing goes on with the next PDU.

Digests are switched on with :meth:`PduParser.set_digests` once login has
negotiated them (they apply from the first PDU after the final Login Response,
§13.1).  To make that race-free the parser pauses after a final successful
Login Response: bytes behind it are kept (copied, once) until the next
:meth:`feed` call, by which time the session has set the digests.
"""

from __future__ import annotations

from bootinit.iscsi.digest import crc32c
from bootinit.iscsi.errors import (
    DataDigestError,
    DataSegmentTooLong,
    HeaderDigestError,
    IscsiError,
    PduFormatError,
    PlacementError,
    ProtocolError,
)
from bootinit.iscsi.pdu import (
    BHS_LEN,
    MAX_DSL,
    PDU_CLASSES,
    DataIn,
    LoginResponse,
    Opcode,
    Pdu,
    Stage,
    decode,
)
from netstack.link.base import BytesLike
from netstack.tcp.placement import Continuation, Placed

ParsedItem = Pdu | DataDigestError
"""What :meth:`PduParser.feed` yields: a PDU, or a recoverable data digest error."""

_S_BHS = 0  # the 48-byte BHS
_S_AHS = 1  # AHS and header digest
_S_DATA = 2  # data segment and padding
_S_DDIGEST = 3  # data digest

_MAX_HEADER = BHS_LEN + 255 * 4 + 4
_DATA_IN = int(Opcode.DATA_IN)
_SCSI_RESPONSE = int(Opcode.SCSI_RESPONSE)


class PduParser:
    """Incremental parser of a received iSCSI byte stream (see module doc)."""

    __slots__ = (
        "_accept",
        "_broken",
        "_crc",
        "_data",
        "_data_len",
        "_data_need",
        "_dest",
        "_dest_off",
        "_expect",
        "_got",
        "_hbuf",
        "_held",
        "_hneed",
        "_last_continuation",
        "_max_dsl",
        "_placements",
        "_pred",
        "_state",
        "data_digest",
        "data_in_order",
        "header_digest",
        "pause_after_login",
    )

    def __init__(
        self,
        *,
        max_recv_data_segment_length: int = 8192,
        header_digest: bool = False,
        data_digest: bool = False,
        accept_opcodes: frozenset[int] | None = None,
        pause_after_login: bool = True,
    ) -> None:
        """``accept_opcodes`` limits the opcodes taken (None: every known opcode)."""
        self._max_dsl = 0
        self.max_recv_data_segment_length = max_recv_data_segment_length
        self.header_digest = header_digest
        self.data_digest = data_digest
        self.pause_after_login = pause_after_login
        self._accept = frozenset(PDU_CLASSES) if accept_opcodes is None else accept_opcodes
        self._placements: dict[int, memoryview] = {}
        self._hbuf = bytearray(_MAX_HEADER + 4)  # + data digest
        self._held: bytes = b""
        self._broken: IscsiError | None = None
        # placement_next: the BufferOffset each placed task's data has reached (its
        # data comes in order, DataPDUInOrder), and, after a placed Data-In with nothing
        # after its data, the ITT and whether that Data-In was the task's last
        self._expect: dict[int, int] = {}
        #: Whether the target sends each task's Data-In in increasing BufferOffset order
        #: (DataPDUInOrder and DataSequenceInOrder both Yes, RFC 7143 §13.19, §13.20):
        #: only then does placement_next predict.
        self.data_in_order = False
        self._pred: tuple[int, bool] | None = None
        # the last continuation made (ITT, offset, task buffer, it), handed out again
        # while the prediction stays the same
        self._last_continuation: tuple[int, int, memoryview, Continuation] | None = None
        self._reset()

    # -- configuration -----------------------------------------------------

    @property
    def max_recv_data_segment_length(self) -> int:
        """Largest DataSegmentLength accepted (our declared MaxRecvDataSegmentLength)."""
        return self._max_dsl

    @max_recv_data_segment_length.setter
    def max_recv_data_segment_length(self, value: int) -> None:
        if not 0 < value <= MAX_DSL:
            raise ValueError(f"MaxRecvDataSegmentLength {value} outside 1..2**24-1")
        self._max_dsl = value
        self._last_continuation = None  # (its window and accept used the old limit)

    def set_digests(self, header: bool, data: bool) -> None:
        """Enable/disable digests; call between PDUs (after the final Login Response)."""
        if self._state != _S_BHS or self._got:
            raise ProtocolError("digest settings changed in the middle of a PDU")
        self.header_digest = header
        self.data_digest = data

    def place(self, itt: int, buffer: bytearray | memoryview) -> None:
        """Register ``buffer`` as the destination of Data-In payloads for ``itt``."""
        mv = memoryview(buffer).cast("B")
        if mv.readonly:
            raise ValueError("placement buffer must be writable")
        self._placements[itt] = mv
        self._expect[itt] = 0

    def unplace(self, itt: int) -> None:
        """Forget the destination of ``itt`` (task done or aborted); no error if absent.
        When the data of a Data-In for it is being parsed, the rest of that data goes to
        a scratch buffer: the task's buffer is its owner's again."""
        dest = self._drop_placement(itt)
        if dest is not None and self._dest is dest:
            self._redirect_to_scratch()

    def pending(self) -> int:
        """Bytes of an incomplete PDU (or held input) currently inside the parser."""
        held = len(self._held)
        if self._state == _S_BHS:
            return held + self._got
        return held + max(self._got, 1)  # somewhere inside a PDU

    @property
    def broken(self) -> IscsiError | None:
        """The fatal error that stopped the parser, or None."""
        return self._broken

    # -- parsing -------------------------------------------------------------

    def _reset(self) -> None:
        self._state = _S_BHS
        self._got = 0  # bytes of the header / data / digest received so far
        self._hneed = BHS_LEN
        self._data_len = 0
        self._data_need = 0
        self._data: bytearray | None = None
        self._dest: memoryview | None = None
        self._dest_off = 0
        self._crc = 0

    def _redirect_to_scratch(self) -> None:
        """The rest of the current Data-In's data goes to a buffer of its own."""
        self._dest = None
        self._data = bytearray(self._data_len)

    def _fail(self, err: IscsiError) -> IscsiError:
        self._broken = err
        return err

    def placement_window(self) -> memoryview | None:
        """Where the next bytes of the stream belong, when the parser knows: inside the
        data of a Data-In placed in its task's buffer, the rest of that data (not its
        padding or digest); None anywhere else. Bytes a link writes there directly are
        then passed in as :class:`~netstack.tcp.placement.Placed` (see :meth:`feed`)."""
        room = self._placement_room()
        if not room:
            return None
        assert self._dest is not None
        o = self._dest_off + self._got
        return self._dest[o:o + room]

    def placement_next(self) -> Continuation | None:
        """A prediction of the next PDU for the stack's placement
        (:class:`~netstack.tcp.placement.Continuation`), inside the data of a placed
        Data-In or just after one, when nothing comes between its data and the next
        header (no digests, no padding): a 48-byte Data-In BHS with no AHS, its data at
        the offset its task has reached. Only when :attr:`data_in_order`: the target
        then sends a task's data in increasing offset order (RFC 7143 §13.19, §13.20),
        so that range lies beyond every byte the task has received, and a wrong guess
        writes only where the right bytes will still come. Without the F bit the target
        owes the task more data (§11.7.1): the same task, right after this Data-In.
        With the status in it (S bit, §11.7.4) the task is done: the oldest other task
        waiting for data (the order commands went out in). The continuation places the
        bytes after the header in that task's buffer there, and its ``accept`` checks
        the header the frame brought: Data-In, no AHS, that ITT and offset, a
        DataSegmentLength this parser would take that holds the bytes placed (so they
        are exactly what :meth:`placement_window` will span once the header is parsed)
        and returns that length, the window from then on (0: refused). None when there
        is no such prediction."""
        if not self.data_in_order or self.header_digest or self.data_digest or \
                self._held or self._broken:
            return None
        if self._state == _S_DATA:
            if self._dest is None or self._data_len & 3:
                return None
            h = self._hbuf
            itt = int.from_bytes(h[16:20], "big")
            if not h[1] & 0x80:
                off = max(self._dest_off + self._data_len, self._expect.get(itt, 0))
            elif h[1] & 0x01:
                return self._continuation_after(itt)
            else:
                return None  # a SCSI Response comes next
        elif self._state == _S_BHS and not self._got and self._pred is not None:
            itt, done = self._pred
            if done:
                return self._continuation_after(itt)
            off = self._expect.get(itt, -1)
        else:
            return None
        return self._continuation(itt, off)

    def _continuation_after(self, itt: int) -> Continuation | None:
        """The continuation for the first Data-In of the oldest placed task other than
        ``itt``."""
        for other in self._placements:
            if other != itt:
                return self._continuation(other, self._expect.get(other, -1))
        return None

    def _continuation(self, itt: int, off: int) -> Continuation | None:
        dest = self._placements.get(itt)
        if dest is None or not 0 <= off < len(dest):
            return None
        last = self._last_continuation
        if last is not None and last[0] == itt and last[1] == off and last[2] is dest:
            # the same prediction as the last one (a pass that parsed no header): the
            # same object, whose accept checks the task's buffer when it is called
            return last[3]
        max_dsl = self._max_dsl
        end = len(dest)

        def accept(bhs: memoryview, n: int) -> int:
            if len(bhs) != BHS_LEN or bhs[0] & 0x3F != _DATA_IN or bhs[4] or \
                    int.from_bytes(bhs[16:20], "big") != itt or \
                    int.from_bytes(bhs[40:44], "big") != off:
                return 0
            dsl = int.from_bytes(bhs[5:8], "big")
            ok = dsl > 0 and n <= dsl <= max_dsl and off + dsl <= end and \
                self._placements.get(itt) is dest
            return dsl if ok else 0
        cont = Continuation(BHS_LEN, dest[off:min(end, off + max_dsl)], accept)
        self._last_continuation = (itt, off, dest, cont)
        return cont

    def _drop_placement(self, itt: int) -> memoryview | None:
        """Forget ``itt``'s buffer (returned, None when it had none), where its data has
        reached, and the last continuation if it was into that buffer (it holds a view
        of it, which would keep its owner from resizing it)."""
        self._expect.pop(itt, None)
        last = self._last_continuation
        if last is not None and last[0] == itt:
            self._last_continuation = None
        return self._placements.pop(itt, None)

    def _placement_room(self) -> int:
        """How many bytes :meth:`placement_window` spans (0: no window), without making
        the view."""
        if self._dest is None or self._state != _S_DATA or self._held or self._broken:
            return 0
        return max(self._data_len - self._got, 0)

    def feed(self, chunk: BytesLike | Placed) -> list[ParsedItem]:
        """Consume ``chunk`` and return the PDUs (or data digest errors) it completed.

        A :class:`~netstack.tcp.placement.Placed` chunk stands for bytes already written
        at the start of :meth:`placement_window` (by the link's ``readv``): they are
        taken as if copied there (and digested).

        Raises a fatal :class:`IscsiError` (see module doc); after that every call
        raises :class:`ProtocolError`.
        """
        if self._broken is not None:
            raise ProtocolError(f"receive parser stopped after: {self._broken}")
        out: list[ParsedItem] = []
        if isinstance(chunk, Placed):
            self._take_placed(chunk.n, out)
            return out
        mv = memoryview(chunk)
        if mv.format != "B" or mv.ndim != 1:
            mv = mv.cast("B")
        if self._held:
            held, self._held = self._held, b""
            rest = self._run(memoryview(held), out)
            if rest is not None:  # paused again: keep the rest of held plus the chunk
                self._held = bytes(rest) + bytes(mv)
                return out
        rest = self._run(mv, out)
        if rest is not None:
            self._held = bytes(rest)
        return out

    def _run(self, mv: memoryview, out: list[ParsedItem]) -> memoryview | None:
        """Parse all of ``mv``; return the unparsed rest if paused after login."""
        pos = 0
        end = len(mv)
        h = self._hbuf
        while pos < end:
            state = self._state
            if state == _S_DATA:
                pos = self._take_data(mv, pos, end)
                if self._got < self._data_need:
                    break
                if self.data_digest:
                    self._state = _S_DDIGEST
                    self._got = 0
                    continue
            elif state == _S_DDIGEST:
                n = min(4 - self._got, end - pos)
                base = _MAX_HEADER + self._got
                h[base:base + n] = mv[pos:pos + n]
                self._got += n
                pos += n
                if self._got < 4:
                    break
            else:  # _S_BHS or _S_AHS
                need = self._hneed
                n = min(need - self._got, end - pos)
                h[self._got:self._got + n] = mv[pos:pos + n]
                self._got += n
                pos += n
                if self._got < need:
                    break
                if state == _S_BHS:
                    full = BHS_LEN + h[4] * 4 + (4 if self.header_digest else 0)
                    if full > BHS_LEN:
                        self._state = _S_AHS
                        self._hneed = full
                        continue
                if self._header_done():
                    continue  # data follows
            # the PDU is complete
            item = self._finish()
            out.append(item)
            if (
                self.pause_after_login
                and pos < end
                and isinstance(item, LoginResponse)
                and item.transit
                and item.nsg == Stage.FULL_FEATURE
                and item.status_class == 0
            ):
                return mv[pos:end]
        return None

    def _header_done(self) -> bool:
        """Check the complete header; return True when a data segment follows."""
        h = self._hbuf
        op = h[0] & 0x3F
        ahs_len = h[4] * 4
        dsl = int.from_bytes(h[5:8], "big")
        hend = BHS_LEN + ahs_len
        if self.header_digest:
            crc = crc32c(memoryview(h)[:hend])
            got = int.from_bytes(h[hend:hend + 4], "little")
            if crc != got:
                raise self._fail(HeaderDigestError(crc, got))
        if op not in self._accept:
            raise self._fail(PduFormatError("Opcode", f"0x{op:02x}", "unexpected opcode"))
        if dsl > self._max_dsl:
            raise self._fail(DataSegmentTooLong(dsl, self._max_dsl))
        self._data_len = dsl
        if dsl == 0:
            return False
        self._data_need = dsl + ((-dsl) & 3)
        self._state = _S_DATA
        self._got = 0
        self._crc = 0
        if op == _DATA_IN and self._placements:
            itt = int.from_bytes(h[16:20], "big")
            dest = self._placements.get(itt)
            if dest is not None:
                off = int.from_bytes(h[40:44], "big")
                if off + dsl > len(dest):
                    raise self._fail(PlacementError(itt, off, dsl, len(dest)))
                self._dest = dest
                self._dest_off = off
                return True
        self._data = bytearray(dsl)
        return True

    def _take_data(self, mv: memoryview, pos: int, end: int) -> int:
        got = self._got
        n = min(self._data_need - got, end - pos)
        dlen = self._data_len
        if got < dlen:
            m = min(n, dlen - got)
            if self._dest is not None:
                o = self._dest_off + got
                self._dest[o:o + m] = mv[pos:pos + m]
            else:
                assert self._data is not None
                self._data[got:got + m] = mv[pos:pos + m]
        if self.data_digest:
            self._crc = crc32c(mv[pos:pos + n], self._crc)
        self._got = got + n
        return pos + n

    def _take_placed(self, n: int, out: list[ParsedItem]) -> None:
        # The window's size, not the window: no view made per Placed chunk unless the
        # data digest needs one.
        room = self._placement_room()
        if not 0 < n <= room:
            raise self._fail(ProtocolError(
                f"{n} placed bytes where the parser expects {room or 'none'}"))
        got = self._got
        if self.data_digest:
            assert self._dest is not None
            o = self._dest_off + got
            self._crc = crc32c(self._dest[o:o + n], self._crc)
        got += n
        self._got = got
        if got == self._data_need:  # no padding: the data segment is complete
            if self.data_digest:
                self._state = _S_DDIGEST
                self._got = 0
            else:
                out.append(self._finish())

    def _finish(self) -> ParsedItem:
        h = memoryview(self._hbuf)
        ahs_len = self._hbuf[4] * 4
        placed = self._dest is not None
        data: BytesLike = b"" if placed or self._data is None else self._data
        try:
            pdu = decode(h[:BHS_LEN], h[BHS_LEN:BHS_LEN + ahs_len], data)
        except PduFormatError as e:
            raise self._fail(e) from None
        self._pred = None
        if placed and isinstance(pdu, DataIn):
            pdu.placed = True
            pdu.segment_length = self._data_len
            end = self._dest_off + self._data_len
            if end > self._expect.get(pdu.itt, 0):  # (a resent PDU does not move it back)
                self._expect[pdu.itt] = end
            if not self._data_len & 3 and (not pdu.final or pdu.status_present):
                self._pred = (pdu.itt, pdu.final)
        if self._placements and (h[0] & 0x3F == _SCSI_RESPONSE or (
                h[0] & 0x3F == _DATA_IN and h[1] & 0x01)):
            # Status (a SCSI Response, or Data-In with the S bit, §11.7.4) ends the task:
            # no later PDU for this ITT may write into its buffer, even one parsed
            # before the session has processed this one (a batch of chunks).
            self._drop_placement(int.from_bytes(h[16:20], "big"))
        item: ParsedItem = pdu
        if self._state == _S_DDIGEST:
            got = int.from_bytes(self._hbuf[_MAX_HEADER:], "little")
            if got != self._crc:
                item = DataDigestError(self._crc, got, pdu)
        self._reset()
        return item


__all__ = ["ParsedItem", "PduParser"]
