"""One TCP connection: the RFC 9293 state machine for an initiator, pure (sans-IO).

What it follows:
- RFC 9293 §3.3.2 states and §3.10 event processing (active open, active and passive
  close, TIME_WAIT; simultaneous open is answered with RST and counted);
- RFC 7323 window scaling and timestamps (RTTM, PAWS);
- RFC 2018 SACK: we send SACK blocks for our out-of-order queue and use the peer's
  blocks as a scoreboard so loss recovery retransmits only the holes (RFC 6675 spirit);
- RFC 6298 retransmission timer (SRTT/RTTVAR, Karn via timestamps, exponential backoff,
  a give-up deadline);
- RFC 5681 slow start / congestion avoidance, fast retransmit, RFC 6582 NewReno recovery;
- RFC 5961 blind RST/SYN/ACK hardening with rate-limited challenge ACKs;
- RFC 1122 §4.2.3.6 keepalive (off unless configured), §4.2.2.17 zero-window probing;
- segmentation offload (TSO) when the layer's ``tso_max`` says the link segments: new data
  leaves as super-segments of whole MSS pieces (:meth:`TcpConnection._send_new`).

No clock, no socket: every entry point takes ``now`` (monotonic seconds); segments to
send are produced by :meth:`TcpConnection.output`. Received in-order bytes wait in a
bounded buffer; the window we advertise is the space left in it, so a consumer that
does not read stops the sender (backpressure).
"""

from __future__ import annotations

import enum
import ipaddress
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from netstack.counters import Counters
from netstack.tcp import seq as sq
from netstack.tcp.placement import Continuation, Placed
from netstack.tcp.segment import (
    ACK,
    FIN,
    PSH,
    RST,
    SYN,
    OutSegment,
    Segment,
    SegmentRun,
    TcpOptions,
    TsoSegment,
    build,
    build_options,
    build_ts,
    pseudo_header_base,
)

if TYPE_CHECKING:
    from netstack.tcp.layer import TcpLayer


class TcpState(enum.Enum):
    """RFC 9293 §3.3.2 connection states."""

    CLOSED = "CLOSED"
    SYN_SENT = "SYN-SENT"
    SYN_RECEIVED = "SYN-RECEIVED"
    ESTABLISHED = "ESTABLISHED"
    FIN_WAIT_1 = "FIN-WAIT-1"
    FIN_WAIT_2 = "FIN-WAIT-2"
    CLOSING = "CLOSING"
    TIME_WAIT = "TIME-WAIT"
    CLOSE_WAIT = "CLOSE-WAIT"
    LAST_ACK = "LAST-ACK"


class TcpError(Exception):
    """A connection failed; ``reason`` is short and stable (refused, reset, timeout...)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(slots=True)
class TcpConfig:
    """Tunables of one connection. Defaults suit a LAN boot/dump initiator."""

    rcvbuf: int = 4 * 1024 * 1024
    sndbuf: int = 4 * 1024 * 1024
    min_rto: float = 0.2  # RFC 6298 says 1 s; 0.2 s as Linux does on a LAN
    max_rto: float = 60.0
    initial_rto: float = 1.0
    user_timeout: float = 60.0  # give up when data stays unacknowledged this long
    connect_timeout: float = 20.0
    syn_retries: int = 6
    msl: float = 30.0  # TIME_WAIT lasts 2*MSL (RFC 9293 §3.4.2)
    fin_wait_2_timeout: float = 60.0
    keepalive_idle: float | None = None  # seconds idle before probing; None = off
    keepalive_interval: float = 10.0
    keepalive_probes: int = 6
    ooo_max_segments: int = 4096
    timestamps: bool = True
    sack: bool = True
    window_scaling: bool = True
    initial_cwnd_segments: int = 10  # RFC 6928
    challenge_ack_per_second: int = 10  # RFC 5961 §7
    tail_loss_probe: bool = True  # RFC 8985 §7 (TLP); needs SACK
    wc_delack: float = 0.2  # RFC 8985 WCDelAckT: worst-case delayed ACK of the peer
    pto_min: float = 0.01  # PTO floor: a loaded host's ACKs lag a 0.1 ms SRTT by ms
    spurious_rto_undo: bool = True  # RFC 3522 detection, RFC 4015 response; timestamps
    #: Header prediction (TcpConnection.receive_predicted); off only to compare paths.
    header_prediction: bool = True


# Timer kinds kept in TcpConnection._timers
_T_RTX = 0  # retransmission / SYN retransmission
_T_PERSIST = 1
_T_KEEPALIVE = 2
_T_TIMEWAIT = 3  # TIME_WAIT and FIN_WAIT_2 limit
_T_GIVEUP = 4  # connect timeout / user timeout
_T_PTO = 5  # tail loss probe (RFC 8985 §7.2)
_T_RACK = 6  # a resent segment's gate passes: resend it if still lost (RFC 8985 §6.3)
_N_TIMERS = 7  # slots of TcpConnection._timers, indexed by the _T_ numbers

_MASK = sq.MASK
_EMPTY_VIEW = memoryview(bytearray(0))  # an empty, writable placement window
_HALF = sq.HALF
#: States in which the peer holds the connection open, so an end without its knowing
#: leaves it sending (``TcpLayer.bury``).
_BURIED_STATES = frozenset((TcpState.ESTABLISHED, TcpState.FIN_WAIT_1, TcpState.FIN_WAIT_2,
                            TcpState.CLOSE_WAIT, TcpState.CLOSING, TcpState.LAST_ACK))
_ESTABLISHED = TcpState.ESTABLISHED  # a module global: ~10 ns to read, the class's ~80
#: Header prediction: the 16-bit data-offset/flags word of the predicted segment with
#: PSH set (PSH is ignored): 32-byte header (NOP NOP TS) with timestamps, 20 without.
_HP_TS = (8 << 12) | ACK | PSH
_HP_PLAIN = (5 << 12) | ACK | PSH
#: The first option word of the aligned timestamps layout (RFC 7323 Appendix A).
_HP_TSOPT = 0x0101080A


class TcpConnection:
    """One connection's state, buffers and timers. Create through :meth:`TcpLayer.connect`."""

    def __init__(self, layer: TcpLayer, local_ip: bytes, local_port: int, remote_ip: bytes,
                 remote_port: int, iss: int, mss: int, config: TcpConfig,
                 counters: Counters, now: float) -> None:
        self.layer = layer
        self.local_ip = local_ip
        self.local_port = local_port
        self.remote_ip = remote_ip
        self.remote_port = remote_port
        self.config = config
        self._c = counters.layer("tcp")
        self.state = TcpState.CLOSED
        self.error: TcpError | None = None
        #: Called by the stack glue after anything happened (connected, data, space, close).
        self.callback: Callable[[TcpConnection], None] | None = None
        self.notified = False
        self.needs_output = False

        # Send sequence space (RFC 9293 §3.3.1)
        self.iss = iss
        self.snd_una = iss
        self.snd_nxt = iss
        self.snd_max = iss  # highest sequence sent + 1
        self.snd_wnd = 0
        self.max_snd_wnd = 0
        self.snd_wl1 = 0
        self.snd_wl2 = 0
        self.snd_wscale = 0
        self._sndbuf = bytearray()  # bytes from snd_una (after SYN) not yet acknowledged
        self._fin_queued = False  # user called close(): FIN after the buffered data
        self._fin_seq: int | None = None  # sequence number our FIN occupies, once sent
        self._syn_acked = False

        # Receive sequence space
        self.irs = 0
        self.rcv_nxt = 0
        self.rcv_wscale = 0
        self._rcv_adv = 0  # right edge of the window we advertised (never moves left)
        # In-order received data not yet read: views into the received frames (joined
        # only when the consumer reads), and their total length.
        self._rcvq: deque[bytes | memoryview | Placed] = deque()
        self._rcv_len = 0
        # Direct placement (netstack.tcp.placement): stream bytes from sequence
        # _place_seq on belong in _place_buf; placement_refill lets the consumer parse
        # what came so far and name its next destination in the middle of a batch.
        self._place_buf: memoryview | None = None
        self._place_seq = 0
        # what follows _place_buf (a predicted header, then its payload's place)
        self.place_then: Continuation | None = None
        self._placed_any = False
        self.placement_refill: Callable[[], None] | None = None
        # sorted, non-overlapping (seq, data); a block grows in place at its tail
        self._ooo: list[tuple[int, bytearray]] = []
        self._ooo_bytes = 0
        self._sack_recent: list[int] = []  # left edges, most recent first (RFC 2018 §4)
        self._fin_received = False
        self._ack_pending = False
        self._ack_now = False

        # Options agreed
        self.mss_local = mss
        self.mss = 536  # peer's, effective (RFC 9293 §3.7.1 default)
        self.ts_ok = False
        self.sack_ok = False
        self._ts_recent = 0
        self._ts_base = now

        # RTO / congestion (RFC 6298, RFC 5681, RFC 6582)
        self.srtt: float | None = None
        self.rttvar = 0.0
        self.rto = config.initial_rto  # effective: base << backoff
        self._rto_base = config.initial_rto  # from the RFC 6298 estimator
        self._backoff = 0
        self._rtt_seq: int | None = None  # Karn timing without timestamps
        self._rtt_time = 0.0
        self.cwnd = 0
        self.ssthresh = 1 << 30
        self._dupacks = 0
        self._in_recovery = False
        self._recover = iss
        self._peer_sacked: list[tuple[int, int]] = []  # scoreboard: sorted sacked ranges
        self._rtx_next = iss  # NewReno recovery without SACK: next byte to retransmit
        self._loss_state = False  # SACK recovery after an RTO: every unSACKed byte is lost
        self._rtx_at: dict[int, float] = {}  # SACK recovery: hole segment -> last resend
        #: when an ACK last brought news (SND.UNA advanced or more bytes SACKed): the
        #: evidence of delivery the recovery timer looks for (see _arm_rack)
        self._progress_at = -1.0
        #: recovery timer expiries without such evidence since the last news
        self._rack_backoff = 0
        self._pipe_after = 0  # RFC 6675 pipe after the last hole pass
        self._retransmitted = False  # anything retransmitted since the last clean ACK
        self._last_activity = now
        self._keepalive_sent = 0
        self._persist_backoff = 0
        self._challenge_window = 0.0
        self._challenge_count = 0
        self._syn_tries = 0

        # Tail loss probe (RFC 8985 §7) and spurious RTO undo (RFC 3522, RFC 4015)
        self._tlp_end: int | None = None  # TLP.end_seq: a probe is out until ACKed past it
        self._tlp_rtx = False  # the probe resent data (its ACK gives no RTT sample)
        self._tlp_flight = 0  # FlightSize when the probe went out
        self._rto_tsval: int | None = None  # RetransmitTS of the first RTO retransmission
        self._undo = (0, 0)  # (cwnd, ssthresh) before that RTO
        self._dsack: tuple[int, int] | None = None  # RFC 2883: duplicate to report once

        self._timers: list[float | None] = [None] * _N_TIMERS
        self._pseudo_base = pseudo_header_base(local_ip, remote_ip)
        self._hp = config.header_prediction

    # ----------------------------------------------------------------- user API
    @property
    def connected(self) -> bool:
        """Whether the handshake completed and the connection can still carry data."""
        return self.state in (TcpState.ESTABLISHED, TcpState.CLOSE_WAIT)

    @property
    def closed(self) -> bool:
        """Whether the connection is finished (CLOSED or TIME_WAIT)."""
        return self.state in (TcpState.CLOSED, TcpState.TIME_WAIT)

    @property
    def eof(self) -> bool:
        """The peer sent FIN and every byte before it has been read."""
        return self._fin_received and not self._rcv_len

    def send_space(self) -> int:
        """How many bytes :meth:`send` would take now."""
        if self._fin_queued or self.state not in (
            TcpState.SYN_SENT, TcpState.ESTABLISHED, TcpState.CLOSE_WAIT
        ):
            return 0
        return max(0, self.config.sndbuf - len(self._sndbuf))

    def send(self, data: bytes | bytearray | memoryview) -> int:
        """Queue data for sending; returns how many bytes were taken (bounded buffer)."""
        if self.error is not None:
            raise self.error
        space = self.send_space()
        if space <= 0:
            if self._fin_queued or self.state not in (
                TcpState.SYN_SENT, TcpState.ESTABLISHED, TcpState.CLOSE_WAIT
            ):
                raise TcpError("closed", f"send on a connection in state {self.state.value}")
            return 0
        n = min(space, len(data))
        self._sndbuf += data[:n] if n < len(data) else data
        self._want_output()
        return n

    def available(self) -> int:
        """Received in-order bytes waiting to be read."""
        return self._rcv_len

    def recv(self, max_bytes: int = -1) -> bytes:
        """Take up to ``max_bytes`` (all when negative) received bytes; b"" when none."""
        if not self._rcvq:
            return b""
        q = self._plain_queue("recv")
        if max_bytes < 0 or max_bytes >= self._rcv_len:
            data = q[0] if len(q) == 1 and isinstance(q[0], bytes) else b"".join(q)
            q.clear()
            self._rcv_len = 0
        else:
            parts: list[bytes | memoryview] = []
            need = max_bytes
            while need:
                head = q[0]
                if len(head) <= need:
                    parts.append(q.popleft())
                    need -= len(head)
                else:
                    parts.append(head[:need])
                    q[0] = head[need:]
                    need = 0
            data = b"".join(parts)
            self._rcv_len -= max_bytes
        self._window_opened()
        return bytes(data)

    def recv_chunks(self) -> list[bytes | memoryview | Placed]:
        """Take every received byte as the pieces it arrived in (views into the frames,
        no copy): for a consumer that parses incrementally. With placement
        (:meth:`set_placement`) a :class:`~netstack.tcp.placement.Placed` item stands for
        bytes already written at the consumer's destination."""
        if not self._rcvq:
            return []
        out = list(self._rcvq)
        self._rcvq.clear()
        self._rcv_len = 0
        self._window_opened()
        return out

    # ------------------------------------------------------ direct placement
    def set_placement(self, buf: memoryview | None,
                      then: Continuation | None = None) -> None:
        """The consumer's next stream bytes — from the first byte it has not taken yet
        (RCV.NXT less what waits in the receive queue) — belong in ``buf``; None: no
        destination known. ``then``: what follows ``buf`` (a header of ``then.gap``
        bytes, then bytes for ``then.buf``; ``buf`` may then be empty: the header comes
        next). Only for a consumer of :meth:`recv_chunks` (see
        :mod:`netstack.tcp.placement`). The link places only in-order payload of the
        header-predicted path, and never beyond ``buf`` (or ``then.buf``, once
        ``then.accept`` has vouched for the header in between)."""
        if buf is None:
            buf = _EMPTY_VIEW
        if not len(buf) and then is None:
            self._place_buf = None
            self.place_then = None
            return
        if buf.readonly:
            raise ValueError("a placement buffer must be writable")
        self._place_buf = buf
        self.place_then = then
        self._place_seq = self.consumer_seq()
        self._placed_any = True
        self.layer.placing = self

    def _continuation_span(self, window_full: bool, gap: memoryview,
                           then_n: int) -> int | None:
        """For :meth:`receive_predicted`, a segment read over the window, ``gap`` (not
        empty) and ``then_n`` bytes of the continuation's buffer: None when it is not
        to be taken so (no continuation, the window not filled first, more than the
        gap, bytes behind a gap that is incomplete or that ``accept`` refuses); else,
        once the gap is complete, how much of the continuation's buffer is the window
        from then on (0: none), and -1 while the gap is incomplete."""
        then = self.place_then
        if then is None or not window_full or len(gap) > then.gap or \
                then_n > len(then.buf):
            return None
        if len(gap) < then.gap:
            return None if then_n else -1
        span = then.accept(gap, then_n)
        if span < then_n or span > len(then.buf) or (then_n and not span):
            return None
        return span

    def consumer_seq(self) -> int:
        """The sequence number of the first received byte the consumer has not taken
        (RCV.NXT less the queued bytes, and less the FIN's number once it came)."""
        return (self.rcv_nxt - self._rcv_len - self._fin_received) & _MASK

    def placement_target(self) -> memoryview | None:
        """Where the payload of the next in-order segment goes: the part of the
        placement buffer from RCV.NXT on (None when there is none or it is used up, or
        when the next segment cannot be the predicted one: not ESTABLISHED, or data
        waiting out of order)."""
        buf = self._place_buf
        if buf is None or self.state is not _ESTABLISHED or self._ooo:
            return None
        off = (self.rcv_nxt - self._place_seq) & _MASK
        if off >= len(buf):
            # at its end with a continuation: an empty window (the header comes next)
            return buf[off:] if off == len(buf) and self.place_then is not None else None
        return buf[off:]

    def placed_within_window(self) -> bool:
        """Whether all that waits in the receive queue is bytes placed in the placement
        window that leave some of it still to fill: the consumer has nothing new to
        parse (the payload it expects goes on), so it may leave them queued until the
        window fills or anything else comes; they join the next ``Placed`` marker.
        False whenever :meth:`placement_target` has no room left or none at all: in any
        state but ESTABLISHED (a FIN, a reset or an error comes to the consumer at once),
        or with data waiting out of order."""
        q = self._rcvq
        if len(q) != 1 or type(q[0]) is not Placed:
            return False
        target = self.placement_target()
        return target is not None and len(target) > 0

    def _plain_queue(self, what: str) -> deque[bytes | memoryview]:
        """The receive queue for a reader that copies: it holds no ``Placed`` marker
        unless the consumer placed data, which only a ``recv_chunks`` reader may do."""
        if self._placed_any and any(type(c) is Placed for c in self._rcvq):
            raise TcpError("placement", f"{what}() on a connection whose consumer "
                           "places data: use recv_chunks()")
        return cast("deque[bytes | memoryview]", self._rcvq)

    def recv_into(self, dest: memoryview | bytearray) -> int:
        """Copy received bytes into ``dest``; returns the count."""
        q = self._plain_queue("recv_into")
        total = min(self._rcv_len, len(dest))
        pos = 0
        while pos < total:
            head = q[0]
            n = min(len(head), total - pos)
            dest[pos:pos + n] = head[:n]
            if n == len(head):
                q.popleft()
            else:
                q[0] = head[n:]
            pos += n
        if total:
            self._rcv_len -= total
            self._window_opened()
        return total

    def close(self, now: float) -> None:
        """Close our direction: FIN after the queued data (RFC 9293 §3.10.4)."""
        if self.state == TcpState.SYN_SENT:
            self._enter_closed(None)
            return
        if self.state in (TcpState.ESTABLISHED, TcpState.CLOSE_WAIT) and not self._fin_queued:
            self._fin_queued = True
            self._want_output()

    def abort(self, now: float) -> None:
        """Abort: send RST if synchronized and forget the connection (RFC 9293 §3.10.5)."""
        if self.state not in (TcpState.CLOSED, TcpState.SYN_SENT, TcpState.TIME_WAIT):
            self.layer.queue_raw(self, self._segment(self.snd_nxt, 0, RST, b"", now, False))
            self._c["rst_out"] += 1
        self._enter_closed(TcpError("aborted", "connection aborted locally"), bury_at=now)

    def __repr__(self) -> str:
        return (f"<TcpConnection {self.local_port}->{_ip(self.remote_ip)}:"
                f"{self.remote_port} {self.state.value}>")

    # ------------------------------------------------------------ internals
    def _notify(self) -> None:
        if not self.notified:
            self.notified = True
            self.layer.notify(self)

    def _want_output(self) -> None:
        if not self.needs_output:
            self.needs_output = True
            self.layer.want_output(self)

    def _ts_now(self, now: float) -> int:
        return int((now - self._ts_base) * 1000) & sq.MASK

    def _rcv_window(self) -> int:
        """Window to advertise (bytes): buffer space, never shrinking the right edge."""
        space = self.config.rcvbuf - self._rcv_len - self._ooo_bytes
        space = max(0, space)
        # Receiver SWS avoidance (RFC 9293 §3.8.6.2.2): do not advertise tiny openings.
        if space < min(self.config.rcvbuf // 2, self.mss_local):
            space = 0
        wnd = min(space, 0xFFFF << self.rcv_wscale)
        edge = sq.diff(self._rcv_adv, self.rcv_nxt)
        return max(wnd, edge, 0)

    def _stamp(self, now: float) -> tuple[int, int]:
        """The window field and TSval shared by the segments of one output pass (the
        first of them carries the pending ACK, so none is owed any more)."""
        self._ack_pending = False
        self._ack_now = False
        return self._advertise(), self._ts_now(now)

    def _packs_at_once(self, with_sack: bool = True) -> bool:
        """Whether the next segment is the common one :func:`build_ts` packs at once:
        timestamps agreed and no SACK block to carry (exactly when :meth:`_segment`
        would add none; ``with_sack`` as it takes it)."""
        return self.ts_ok and not (with_sack and self.sack_ok and
                                   (self._ooo or self._dsack is not None))

    def _advertise(self) -> int:
        """The window field of the next segment (scaled, RFC 7323 §2.3); records the right
        edge it advertises."""
        wnd = self._rcv_window()
        self._rcv_adv = sq.add(self.rcv_nxt, wnd)
        return min(wnd >> self.rcv_wscale, 0xFFFF)

    def _window_opened(self) -> None:
        # A read opened space: announce it if it moved the edge by 2 MSS or half the buffer.
        if self._fin_received:
            return
        space = self.config.rcvbuf - self._rcv_len - self._ooo_bytes
        edge = sq.diff(self._rcv_adv, self.rcv_nxt)
        if space - edge >= min(2 * self.mss_local, self.config.rcvbuf // 2):
            self._ack_pending = True
            self._want_output()

    def _segment(self, seqno: int, ack: int, flags: int, payload: bytes | memoryview,
                 now: float, with_sack: bool = True, syn_opts: TcpOptions | None = None) -> bytes:
        if flags & ACK:  # it carries the ACK owed: none is pending any more
            self._ack_pending = False
            self._ack_now = False
        if syn_opts is None and self._packs_at_once(with_sack):
            # the common segment (timestamps, no SACK block), packed at once: the same
            # bytes as the general way below (build_ts is build with these options)
            return build_ts(self._pseudo_base, self.local_port, self.remote_port, seqno,
                            ack, flags, self._advertise(), self._ts_now(now),
                            self._ts_recent, payload, self.layer.tx_csum_partial)
        opts = syn_opts if syn_opts is not None else TcpOptions()
        if self.ts_ok or (syn_opts is not None and syn_opts.ts_val is not None):
            opts.ts_val = self._ts_now(now)
            opts.ts_ecr = self._ts_recent
        if with_sack and self.sack_ok and (self._ooo or self._dsack):
            limit = 3 if self.ts_ok else 4
            if payload:
                # SACK blocks must fit beside the payload: self.mss already leaves room
                # for the timestamps only (RFC 6691: options count against the MSS).
                limit = min(limit, max(0, (self.mss - len(payload) - 4) // 8))
            if limit:
                blocks: list[tuple[int, int]] = []
                if self._dsack is not None:
                    # RFC 2883 §4: the duplicate first, reported once, so the sender can
                    # tell a spurious retransmission (and undo its window reduction).
                    blocks.append(self._dsack)
                    self._dsack = None
                    self._c["dsack_out"] += 1
                if self._ooo and len(blocks) < limit:
                    blocks += self._sack_blocks(limit - len(blocks))
                opts.sack = blocks
        window = min(self.config.rcvbuf, 0xFFFF) if flags & SYN else self._advertise()
        return build(self.local_ip, self.remote_ip, self.local_port, self.remote_port, seqno,
                     ack, flags, window, build_options(opts), payload,
                     self.layer.tx_csum_partial)

    def _sack_blocks(self, limit: int) -> list[tuple[int, int]]:
        blocks: list[tuple[int, int]] = []
        by_left = {s: s + len(d) for s, d in self._ooo}
        for left in self._sack_recent:
            if left in by_left and len(blocks) < limit:
                blocks.append((left, by_left[left] & sq.MASK))
        for s, d in self._ooo:
            if len(blocks) >= limit:
                break
            if all(b[0] != s for b in blocks):
                blocks.append((s, (s + len(d)) & sq.MASK))
        return blocks

    # ------------------------------------------------------------- opening
    def start_connect(self, now: float) -> None:
        """Active OPEN (RFC 9293 §3.10.1): queue the SYN."""
        self.state = TcpState.SYN_SENT
        self.snd_nxt = self.iss
        self._timers[_T_GIVEUP] = now + self.config.connect_timeout
        self._timers[_T_RTX] = now  # send the SYN on the next output
        self._want_output()

    def _syn_segment(self, now: float) -> bytes:
        c = self.config
        opts = TcpOptions(mss=self.mss_local)
        if c.sack:
            opts.sack_perm = True
        if c.timestamps:
            opts.ts_val = 0
        if c.window_scaling:
            self.rcv_wscale = self._wscale_shift()
            opts.wscale = self.rcv_wscale
        return self._segment(self.iss, 0, SYN, b"", now, False, opts)

    # ----------------------------------------------------------------- input
    def receive(self, seg: Segment, now: float) -> None:
        """Process one arriving segment (RFC 9293 §3.10.7)."""
        if self.state == TcpState.SYN_SENT:
            self._receive_syn_sent(seg, now)
            return
        if self.state == TcpState.CLOSED:
            return
        if self.state == TcpState.SYN_RECEIVED and not self._receive_syn_received(seg, now):
            return
        flags = seg.flags
        plen = len(seg.payload)
        opts = seg.opts

        # PAWS (RFC 7323 §5.3)
        if self.ts_ok and opts.ts_val is not None and not flags & RST and \
                sq.lt(opts.ts_val, self._ts_recent):
            self._c["paws_drop"] += 1
            self._send_ack_now()
            return

        # First: sequence acceptability (RFC 9293 §3.10.7.4, table of four cases)
        wnd = sq.diff(self._rcv_adv, self.rcv_nxt)
        wnd = max(wnd, 0)
        seg_len = seg.seg_len
        ok = self._acceptable(seg.seq, seg_len, wnd)
        if not ok and wnd == 0 and flags & ACK and not flags & (RST | SYN) and \
                seg.seq == self.rcv_nxt:
            # RFC 9293 §3.10.7.4: with a zero window still take valid ACKs.
            self._process_ack(seg, now)
            self._send_ack_now()
            return
        if not ok:
            if flags & RST:
                self._c["rst_out_of_window"] += 1
            elif not flags & SYN and (plen or flags & FIN):
                self._c["out_of_window"] += 1
                if self.ts_ok and opts.ts_val is not None and \
                        self._old_retransmission(seg, seg_len):
                    # Echo this retransmission's timestamp, not the one of the segment
                    # whose ACK was lost: see _old_retransmission.
                    self._ts_recent = opts.ts_val
                    self._c["ts_refreshed_by_duplicate"] += 1
                if plen and sq.le(sq.add(seg.seq, plen), self.rcv_nxt):
                    self._dsack = (seg.seq, sq.add(seg.seq, plen))
                self._send_ack_now()  # old data again: our ACK was lost, tell it now
            else:
                # A pure ACK or a SYN outside the window: answer at the challenge-ACK
                # rate (RFC 5961 §4, §7), so spoofed segments cannot drive an ACK loop.
                self._c["out_of_window"] += 1
                self._challenge_ack(now)
            return

        # Second: RST (RFC 5961 §3.2)
        if flags & RST:
            if seg.seq == self.rcv_nxt:
                self._c["rst_in"] += 1
                if self.state in (TcpState.LAST_ACK, TcpState.CLOSING, TcpState.TIME_WAIT):
                    self._enter_closed(None)
                else:
                    self._enter_closed(TcpError("reset", "connection reset by peer"))
            else:
                self._c["rst_challenged"] += 1
                self._challenge_ack(now)
            return

        # Fourth: SYN in a synchronized state (RFC 5961 §4.2)
        if flags & SYN:
            self._c["syn_challenged"] += 1
            self._challenge_ack(now)
            return

        if not flags & ACK:
            self._c["no_ack_drop"] += 1
            return

        # Timestamps: TS.Recent update (RFC 7323 §4.3)
        if self.ts_ok and opts.ts_val is not None and sq.le(seg.seq, self._rcv_adv) and \
                sq.le(seg.seq, self.rcv_nxt):
            self._ts_recent = opts.ts_val

        # Fifth: ACK field (RFC 9293 §3.10.7.4, RFC 5961 §5)
        if not self._process_ack(seg, now):
            return

        self._last_activity = now
        self._keepalive_sent = 0

        # Seventh: segment text
        if plen and self.state in (TcpState.ESTABLISHED, TcpState.FIN_WAIT_1,
                                   TcpState.FIN_WAIT_2):
            self._receive_data(seg.seq, seg.payload, now)
        elif plen:
            self._c["data_after_fin"] += 1

        # Eighth: FIN
        if flags & FIN:
            fin_seq = sq.add(seg.seq, plen)
            if fin_seq == self.rcv_nxt and not self._fin_received:
                self._receive_fin(now)
            elif self._fin_received:
                self._send_ack_now()  # retransmitted FIN: ACK again
            # else: FIN beyond a hole; the peer retransmits it

    def receive_predicted(self, seqno: int, ack: int, offflags: int, window: int,
                          tsopt: int, ts_val: int, ts_ecr: int, segment: memoryview,
                          now: float, placed: int = 0,
                          tail: memoryview | None = None,
                          gap: memoryview | None = None, then_n: int = 0) -> bool:
        """Header prediction: take the common segment of a bulk transfer without the full
        walk of :meth:`receive` (Van Jacobson's fast path, as 4.4BSD ``tcp_input`` and
        Linux ``tcp_rcv_established`` do). True when the segment was handled; False,
        having changed nothing, when it is not the predicted one (the caller parses it
        and calls :meth:`receive`).

        The arguments are the raw header fields (``offflags``: the 16-bit data offset
        and flags word; ``tsopt``, ``ts_val``, ``ts_ecr``: the 12 bytes after the fixed
        header read as three words, meaningful only for a 32-byte header) and the whole
        segment. Predicted: state ESTABLISHED, nothing in the out-of-order queue; flags
        ACK or ACK+PSH (no SYN, FIN, RST, URG, ECE, CWR, reserved bits); with
        timestamps agreed, exactly the aligned NOP NOP TS layout and TSval not older
        than TS.Recent (so PAWS, RFC 7323 §5.3, passes), without them no options;
        SEG.SEQ = RCV.NXT and the data fits the window we advertised (so it is
        acceptable, RFC 9293 §3.10.7.4, and needs no trimming); SND.UNA <= SEG.ACK <=
        SND.MAX (RFC 5961 §5.2 passes) with data, or SEG.ACK > SND.UNA without (a pure
        duplicate ACK goes the full way to the fast-retransmit logic); the window field
        unchanged and the segment passing the SND.WL1/WL2 rule.

        What follows is then exactly what :meth:`receive` would do with it, in its
        order: TS.Recent = TSval (RFC 7323 §4.3: SEG.SEQ = RCV.NXT <= Last.ACK.sent);
        new data acknowledged (the shared ``_ack_advanced``); the window update
        (unchanged window: SND.WL1/WL2 move, a persist timer stops); the data appended
        at RCV.NXT and an ACK marked pending (one per batch, as before). Sequence
        comparisons are inline masked integer compares with the meaning of
        :mod:`netstack.tcp.seq` (``lt(a, b)`` is ``(a - b) & MASK >= HALF``).

        Placed (``tail`` not None, :mod:`netstack.tcp.placement`): ``segment`` is the
        header alone; the payload's first ``placed`` bytes are already in the placement
        buffer at RCV.NXT and ``tail`` holds the rest (in a buffer the link reuses, so it
        is copied). The checks are the same; the queue gets a ``Placed`` marker. With a
        continuation (:class:`~netstack.tcp.placement.Continuation`, ``gap`` not None):
        the payload filled the window, ``gap`` holds the next bytes (the predicted
        header, copied) and ``then_n`` bytes after them went to the continuation's
        buffer, which ``accept`` must vouch for; the queue gets ``Placed``, the gap,
        ``Placed``, and the continuation's buffer becomes the window.
        """
        if not self._hp or self.state is not _ESTABLISHED or self._ooo:
            return False
        if self.ts_ok:
            if offflags | PSH != _HP_TS or tsopt != _HP_TSOPT or \
                    (ts_val - self._ts_recent) & _MASK >= _HALF:
                return False
            hlen = 32
        elif offflags | PSH != _HP_PLAIN:
            return False
        else:
            hlen = 20
        rcv_nxt = self.rcv_nxt
        if seqno != rcv_nxt:
            return False
        wnd = self.snd_wnd
        if window << self.snd_wscale != wnd:
            return False
        una = self.snd_una
        acked = (ack - una) & _MASK
        flight = (self.snd_max - una) & _MASK
        if acked > flight or flight >= _HALF:
            return False
        span = -1  # with a continuation: the window after its gap (-1: gap incomplete)
        if tail is None:
            plen = len(segment) - hlen
        else:
            if len(segment) != hlen:
                return False
            if placed or gap is not None:  # within the placement target
                buf = self._place_buf
                if buf is None:
                    return False
                room = len(buf) - ((rcv_nxt - self._place_seq) & _MASK)
                if placed > room:
                    return False
                if gap is not None:
                    got = self._continuation_span(placed == room, gap, then_n)
                    if got is None:
                        return False
                    span = got
            plen = placed + len(tail) if gap is None else \
                placed + len(gap) + then_n + len(tail)
        if not plen and not acked:
            return False
        # Some tests below follow from invariants elsewhere (RCV.NXT <= our advertised
        # edge; SND.WL2 <= SND.UNA; a queued out-of-order segment leaves SND.WL1 past
        # RCV.NXT); they stay so that this subset holds by what is checked here alone.
        room = (self._rcv_adv - rcv_nxt) & _MASK
        if room >= _HALF or plen > room:
            return False
        wl1 = self.snd_wl1
        if wl1 != seqno:
            if (wl1 - seqno) & _MASK < _HALF:
                return False  # SEG.SEQ < SND.WL1: no window update, not predicted
        elif 0 < (self.snd_wl2 - ack) & _MASK < _HALF:
            return False

        # -- predicted: the full path's steps, in its order
        if hlen == 32:  # timestamps agreed
            self._ts_recent = ts_val
        c = self._c
        if acked:
            opts = TcpOptions(ts_val=ts_val, ts_ecr=ts_ecr) if self.ts_ok else TcpOptions()
            self._ack_advanced(ack, acked, Segment(
                self.remote_port, self.local_port, seqno, ack, offflags & 0xFF, window, opts,
                segment[hlen:]), now)
        self.snd_wl1 = seqno
        self.snd_wl2 = ack
        if wnd > self.max_snd_wnd:
            self.max_snd_wnd = wnd
        if wnd > 0:
            self._timers[_T_PERSIST] = None
            self._persist_backoff = 0
        self._last_activity = now
        self._keepalive_sent = 0
        if not plen:
            c["fast_path_ack"] += 1
            return True
        # _receive_data's in-order case (kept as a view of an immutable frame that is
        # mostly payload, else copied)
        if tail is not None:
            q = self._rcvq
            if placed:
                last = q[-1] if q else None
                if type(last) is Placed:
                    # the queue ends with placed bytes, which end at RCV.NXT where
                    # these begin: one marker for both (one parser step per run of
                    # placed frames); a marker the consumer took is no longer queued
                    last.n += placed
                else:
                    q.append(Placed(placed))
                c["bytes_placed"] += placed
            if gap is not None:
                q.append(bytes(gap))
                if span >= 0:
                    # past the gap: the continuation's buffer, as far as the header
                    # said, is the window now (none when the header was not the one
                    # predicted and nothing was placed behind it)
                    then = self.place_then
                    assert then is not None  # (_continuation_span)
                    self._place_buf = then.buf[:span] if span else None
                    self._place_seq = (rcv_nxt + placed + then.gap) & _MASK
                    self.place_then = None
                    if then_n:
                        q.append(Placed(then_n))
                        c["bytes_placed"] += then_n
                        c["placed_ahead"] += 1
            if len(tail):
                q.append(bytes(tail))
        else:
            payload = segment[hlen:]
            frame = payload.obj
            self._rcvq.append(payload if isinstance(frame, bytes) and plen * 4 >= len(frame)
                              else bytes(payload))
        self._rcv_len += plen
        self.rcv_nxt = (rcv_nxt + plen) & _MASK
        c["bytes_in"] += plen
        c["fast_path"] += 1
        self._ack_pending = True
        if not self.needs_output:  # _want_output() and _notify(), inline
            self.needs_output = True
            self.layer.want_output(self)
        if not self.notified:
            self.notified = True
            self.layer.notify(self)
        return True

    def _acceptable(self, seqno: int, seg_len: int, wnd: int) -> bool:
        if seg_len == 0:
            if wnd == 0:
                return seqno == self.rcv_nxt
            return sq.between(self.rcv_nxt, seqno, sq.add(self.rcv_nxt, wnd))
        if wnd == 0:
            return False
        end = sq.add(seqno, seg_len - 1)
        hi = sq.add(self.rcv_nxt, wnd)
        return sq.between(self.rcv_nxt, seqno, hi) or sq.between(self.rcv_nxt, end, hi)

    def _old_retransmission(self, seg: Segment, seg_len: int) -> bool:
        """Is ``seg`` a plausible retransmission of data we already acknowledged?

        RFC 7323 §5.3 (R2 before R3) keeps TS.Recent unchanged for a segment outside the
        window, so the duplicate ACK answering a retransmission of data whose ACK was
        lost echoes the timestamp of the *original* segment. A Linux sender takes that
        echo as an RTT sample when the ACK advances SND.UNA (Karn forbids the timing
        sample, so it falls back to TSecr), and after a few lost ACKs at 20% loss it
        measured RTTs of 15 s, set a 35 s RTO and the transfer stalled.

        This is the deliberate deviation: a segment that lies wholly below RCV.NXT but
        within one maximum window of it, carries a valid ACK (RFC 5961 §5.2 bounds) and
        passed PAWS refreshes TS.Recent, as RFC 7323 §4.3's own rule (SEG.SEQ <=
        Last.ACK.sent) allows. The echo then times the retransmission just answered,
        a true round trip. Off-path injection needs an in-window-sized guess of both
        sequence numbers, the same bar RFC 5961 sets for data.
        """
        if not seg.flags & ACK:
            return False
        back = sq.diff(self.rcv_nxt, seg.seq)
        if back <= 0 or back > max(self.config.rcvbuf, 0xFFFF << self.rcv_wscale):
            return False
        if sq.gt(sq.add(seg.seq, seg_len), self.rcv_nxt):
            return False
        ack = seg.ack
        return sq.le(ack, self.snd_max) and \
            sq.ge(ack, sq.add(self.snd_una, -max(self.max_snd_wnd, 0xFFFF)))

    def _challenge_ack(self, now: float) -> None:
        if now - self._challenge_window >= 1.0:
            self._challenge_window = now
            self._challenge_count = 0
        if self._challenge_count < self.config.challenge_ack_per_second:
            self._challenge_count += 1
            self._c["challenge_acks"] += 1
            self._send_ack_now()

    def _send_ack_now(self) -> None:
        self._ack_pending = True
        self._ack_now = True
        self._want_output()

    def _receive_syn_sent(self, seg: Segment, now: float) -> None:
        flags = seg.flags
        if flags & ACK and (sq.le(seg.ack, self.iss) or sq.gt(seg.ack, self.snd_max)):
            if not flags & RST:
                self.layer.send_reset_for(self.local_ip, self.remote_ip, self.local_port,
                                          self.remote_port, seg.ack, 0, RST)
            self._c["bad_synack"] += 1
            return
        if flags & RST:
            if flags & ACK:
                self._c["refused"] += 1
                self._enter_closed(TcpError(
                    "refused", f"connection refused by {_ip(self.remote_ip)}:{self.remote_port}"))
            return
        if not flags & SYN:
            return
        if not flags & ACK:
            # Simultaneous open is not something an initiator needs; refuse it cleanly.
            self._c["simultaneous_open"] += 1
            return
        self._adopt_peer_syn(seg)
        self._syn_acked = True
        self.snd_una = seg.ack
        self.snd_nxt = seg.ack
        self.snd_max = seg.ack
        self.snd_wl2 = seg.ack
        # RTT sample from the handshake unless the SYN was retransmitted (Karn)
        if self._syn_tries == 1:
            self._rtt_sample(now - self._rtt_time)
        self._established(now)
        self._send_ack_now()

    def _adopt_peer_syn(self, seg: Segment) -> None:
        """Take the peer's ISN and SYN options (RFC 9293 §3.7.1, RFC 7323 §2.2, RFC 2018)."""
        opts = seg.opts
        self.irs = seg.seq
        self.rcv_nxt = sq.add(seg.seq, 1)
        if opts.mss:
            self.mss = min(opts.mss, self.mss_local)
        else:
            self.mss = min(536, self.mss_local)
        if self.config.window_scaling and opts.wscale is not None:
            self.snd_wscale = opts.wscale
        else:
            self.rcv_wscale = 0
            self.snd_wscale = 0
        self.ts_ok = self.config.timestamps and opts.ts_val is not None
        if self.ts_ok:
            self._ts_recent = opts.ts_val or 0
            self.mss -= 12
        self.sack_ok = self.config.sack and opts.sack_perm
        self.snd_wnd = seg.window  # never scaled in a SYN (RFC 7323 §2.2)
        self.max_snd_wnd = self.snd_wnd
        self.snd_wl1 = seg.seq
        self.cwnd = self.config.initial_cwnd_segments * self.mss

    def _established(self, now: float) -> None:
        self._backoff = 0
        self._timers[_T_RTX] = None
        self._timers[_T_GIVEUP] = None
        self.state = TcpState.ESTABLISHED
        self._last_activity = now
        self._arm_keepalive(now)
        self._c["connects"] += 1
        self._rcv_adv = sq.add(self.rcv_nxt, min(self.config.rcvbuf, 0xFFFF << self.rcv_wscale))
        self.layer.path_confirmed(self.remote_ip, now)
        self._notify()

    # ---------------------------------------------------------- passive open
    def start_passive(self, seg: Segment, now: float) -> None:
        """A SYN reached a listening port (RFC 9293 §3.10.7.2): answer with SYN-ACK."""
        self.state = TcpState.SYN_RECEIVED
        self._adopt_peer_syn(seg)
        if seg.opts.wscale is not None and self.config.window_scaling:
            self.rcv_wscale = self._wscale_shift()
        self._timers[_T_GIVEUP] = now + self.config.connect_timeout
        self._timers[_T_RTX] = now
        self._want_output()

    def _wscale_shift(self) -> int:
        shift = 0
        while (0xFFFF << shift) < self.config.rcvbuf and shift < 14:
            shift += 1
        return shift

    def _synack_segment(self, now: float) -> bytes:
        opts = TcpOptions(mss=self.mss_local, sack_perm=self.sack_ok)
        if self.ts_ok:
            opts.ts_val = 0
        if self.snd_wscale or self.rcv_wscale:
            opts.wscale = self.rcv_wscale
        return self._segment(self.iss, self.rcv_nxt, SYN | ACK, b"", now, False, opts)

    def _receive_syn_received(self, seg: Segment, now: float) -> bool:
        """RFC 9293 §3.10.7.4 in SYN-RECEIVED; True when the segment goes on as ESTABLISHED."""
        flags = seg.flags
        if flags & RST:
            if seg.seq == self.rcv_nxt:
                self._enter_closed(TcpError("reset", "connection reset during handshake"))
            return False
        if flags & SYN:
            if seg.seq == self.irs:  # retransmitted SYN: answer again
                self._timers[_T_RTX] = now
                self._want_output()
            return False
        if not flags & ACK:
            return False
        if not (sq.gt(seg.ack, self.snd_una) and sq.le(seg.ack, self.snd_max)):
            self.layer.send_reset_for(self.local_ip, self.remote_ip, self.local_port,
                                      self.remote_port, seg.ack, 0, RST)
            return False
        self.snd_una = seg.ack
        self.snd_nxt = seg.ack
        self.snd_wnd = seg.window << self.snd_wscale
        self.max_snd_wnd = self.snd_wnd
        self.snd_wl1 = seg.seq
        self.snd_wl2 = seg.ack
        self._syn_acked = True
        if self._syn_tries == 1:
            self._rtt_sample(now - self._rtt_time)
        self._established(now)
        self.layer.accepted(self)
        return True

    def _process_ack(self, seg: Segment, now: float) -> bool:
        ack = seg.ack
        if sq.gt(ack, self.snd_max):
            # RFC 5961 §5.2: ACK for data never sent
            self._c["ack_too_new"] += 1
            self._send_ack_now()
            return False
        if sq.lt(ack, sq.add(self.snd_una, -max(self.max_snd_wnd, 0xFFFF))):
            self._c["ack_too_old"] += 1
            self._send_ack_now()
            return False

        window = seg.window << self.snd_wscale
        acked = sq.diff(ack, self.snd_una)
        new_sack = False
        if self.sack_ok and seg.opts.sack:
            before = self._sacked_bytes()
            self._update_scoreboard(seg.opts.sack)
            new_sack = self._sacked_bytes() > before
            if new_sack:
                self._progress_at = now
                self._rack_backoff = 0

        if acked > 0:
            self._ack_advanced(ack, acked, seg, now)
            if new_sack and not self._in_recovery and self._peer_sacked:
                # RFC 6675 §5: loss is judged on every ACK carrying SACK information,
                # not only on duplicates (with ACKs lost, the duplicates may never come).
                self._maybe_recover(now)
        elif acked == 0 and not seg.payload and not seg.flags & FIN and \
                self._flight() > 0 and (window == self.snd_wnd or new_sack):
            # RFC 6675 §2: an ACK that SACKs new data is a duplicate even when the
            # window changed (RFC 5681's definition wants the same window).
            self._dupack(now)

        # Window update (RFC 9293 §3.10.7.4: SND.WL1/WL2 rule)
        if sq.lt(self.snd_wl1, seg.seq) or (self.snd_wl1 == seg.seq and
                                             sq.le(self.snd_wl2, ack)):
            opened = window > self.snd_wnd
            self.snd_wnd = window
            self.snd_wl1 = seg.seq
            self.snd_wl2 = ack
            self.max_snd_wnd = max(self.max_snd_wnd, window)
            if window > 0:
                self._timers[_T_PERSIST] = None
                self._persist_backoff = 0
            if opened:
                self._want_output()

        # State changes driven by the ACK of our FIN
        if self._fin_acked():
            if self.state == TcpState.FIN_WAIT_1:
                self.state = TcpState.FIN_WAIT_2
                self._timers[_T_TIMEWAIT] = now + self.config.fin_wait_2_timeout
            elif self.state == TcpState.CLOSING:
                self._enter_time_wait(now)
            elif self.state == TcpState.LAST_ACK:
                self._enter_closed(None)
                return False
        return True

    def _flight(self) -> int:
        return sq.diff(self.snd_max, self.snd_una)

    def _fin_acked(self) -> bool:
        return self._fin_seq is not None and sq.gt(self.snd_una, self._fin_seq)

    def _ack_advanced(self, ack: int, acked: int, seg: Segment, now: float) -> None:
        c = self._c
        self._progress_at = now
        self._rack_backoff = 0
        data_acked = min(acked, len(self._sndbuf))  # beyond the data: our FIN
        del self._sndbuf[:data_acked]
        self.snd_una = ack
        if sq.lt(self.snd_nxt, ack):
            self.snd_nxt = ack
        c["bytes_acked"] += data_acked
        # RTT (RFC 6298 §3 / RFC 7323 §4): timestamps echo, else Karn timing. Karn's rule
        # holds for timestamps too: an ACK of retransmitted data (up to the recovery point)
        # may echo the original transmission's timestamp, so it gives no sample.
        if (self._retransmitted and sq.le(ack, self._recover)) or self._tlp_rtx:
            pass  # the probe resent data: whose transmission does the ACK answer?
        elif self.ts_ok and seg.opts.ts_val is not None and seg.opts.ts_ecr:
            sample = (self._ts_now(now) - seg.opts.ts_ecr) & sq.MASK
            if sample < 600_000:
                self._rtt_sample(sample / 1000.0)
        elif self._rtt_seq is not None and sq.ge(ack, self._rtt_seq):
            self._rtt_sample(now - self._rtt_time)
            self._rtt_seq = None
        if self._retransmitted and sq.gt(ack, self._recover):
            self._retransmitted = False
        if self._rto_tsval is not None:
            self._check_spurious_rto(seg)
        if self._tlp_end is not None and sq.ge(ack, self._tlp_end):
            self._tlp_acked(seg, ack)
        # Progress: undo the timer backoff (as BSD does when SND.UNA advances)
        self._backoff = 0
        self.rto = self._rto_base
        self._prune_scoreboard()

        mss = self.mss
        if self._in_recovery:
            if sq.ge(ack, self._recover):
                # Full ACK (RFC 6582 §3.2 step 3; RFC 6675 §5: recovery ends)
                self._in_recovery = False
                self._rtx_at.clear()
                self._timers[_T_RACK] = None
                if self._loss_state:
                    self._loss_state = False  # after an RTO: slow start goes on
                else:
                    self.cwnd = min(self.ssthresh, max(self._flight(), mss) + mss)
                self._dupacks = 0
            elif self.sack_ok:
                if self._loss_state and self.cwnd < self.ssthresh:
                    self.cwnd += min(acked, mss)  # slow start while repairing (RFC 5681)
                self._want_output()
            else:
                # Partial ACK: retransmit the next hole, deflate (RFC 6582 §3.2 step 5)
                self.cwnd = max(self.cwnd - acked + mss, mss)
                self._rtx_next = ack
                self._want_output()
        else:
            self._dupacks = 0
            if sq.diff(ack, self._recover) > 1 << 29:
                self._recover = sq.add(ack, -1)  # keep RFC 6582's recover point in range
            tso = self._tso_bytes() if self.layer.tso_max else 0
            if not tso:
                if self.cwnd < self.ssthresh:
                    self.cwnd += min(acked, mss)  # slow start (RFC 5681 §3.1, ABC L=1*SMSS)
                else:
                    self.cwnd += max(1, mss * mss // max(self.cwnd, 1))
            elif self.cwnd < self.ssthresh:
                # TSO: the receiver takes each super-segment as one (GRO-like) and ACKs it
                # once. Such stretch ACKs are credited in full up to one super-segment (RFC
                # 3465 §2.3's L, here the burst we send anyway), as Linux credits them.
                self.cwnd += min(acked, tso)
            else:
                # and in congestion avoidance by bytes acked (RFC 3465 §2.1): one MSS per
                # cwnd of data acknowledged.
                self.cwnd += max(1, mss * min(acked, tso) // max(self.cwnd, 1))
        # Retransmission timer (RFC 6298 §5.2/5.3), probe timer (RFC 8985 §7.2)
        if self._flight() > 0:
            self._timers[_T_RTX] = now + self.rto
            self._arm_pto(now)
        else:
            self._timers[_T_RTX] = None
            self._timers[_T_PTO] = None
        self._timers[_T_GIVEUP] = None
        if self._sndbuf or self._fin_queued:
            self._want_output()
        self._notify()  # send space opened

    def _check_spurious_rto(self, seg: Segment) -> None:
        """Eifel detection (RFC 3522 §2) on the first acceptable ACK after an RTO.

        An echo older than the first retransmission's timestamp answers the original
        transmission: the RTO was spurious (its ACKs were lost or late). Then the
        window reduction is undone (RFC 4015 §3, the Eifel response, simplified: the
        window before the timeout comes back) and loss recovery stops, instead of
        resending a whole flight that has arrived and restarting from one segment.
        """
        tsval, self._rto_tsval = self._rto_tsval, None
        ecr = seg.opts.ts_ecr
        if tsval is None or not ecr or not sq.lt(ecr, tsval):
            return
        self._c["spurious_rto"] += 1
        cwnd, ssthresh = self._undo
        self.cwnd = max(self.cwnd, cwnd)
        self.ssthresh = max(self.ssthresh, ssthresh)
        self._in_recovery = False
        self._loss_state = False
        self._rtx_at.clear()
        self._retransmitted = False
        self._recover = sq.add(self.snd_una, -1)  # real losses may start recovery again

    def _arm_pto(self, now: float) -> None:
        """Arm the tail loss probe (RFC 8985 §7.2): PTO = 2·SRTT, plus the peer's
        worst-case delayed ACK when one segment is in flight, plus 2 ms of timer slack
        otherwise (as Linux does), at least ``pto_min``, and only before the RTO. Without
        the floor a sub-millisecond SRTT made probes on a clean but loaded link."""
        t = self._timers
        t[_T_PTO] = None
        if not (self.config.tail_loss_probe and self.sack_ok) or self.srtt is None or \
                self._in_recovery or self._tlp_end is not None or \
                self._fin_seq is not None or \
                self.state not in (TcpState.ESTABLISHED, TcpState.CLOSE_WAIT):
            return
        flight = self._flight()
        if flight <= 0:
            return
        pto = max(2 * self.srtt + (self.config.wc_delack if flight <= self.mss else 0.002),
                  self.config.pto_min)
        rtx = t[_T_RTX]
        if rtx is not None and now + pto >= rtx:
            return
        t[_T_PTO] = now + pto

    def _on_pto(self, now: float) -> None:
        """Send the loss probe (RFC 8985 §7.3): one new segment if the peer's window
        takes it, else the last segment again. The congestion window is left alone:
        the probe's ACK (SACK) turns a tail loss into fast recovery, or shows that only
        ACKs were lost, without waiting for the RTO and restarting from one segment."""
        self._timers[_T_PTO] = None
        if self._in_recovery or self._tlp_end is not None or self._fin_seq is not None or \
                self._flight() <= 0:
            return
        una, mss = self.snd_una, self.mss
        off = sq.diff(self.snd_nxt, una)
        unsent = len(self._sndbuf) - off
        if unsent > 0 and self.snd_wnd - off >= min(mss, unsent):
            n = min(mss, unsent)
            seqno = self.snd_nxt
            self.snd_nxt = sq.add(seqno, n)
            if sq.gt(self.snd_nxt, self.snd_max):
                self.snd_max = self.snd_nxt
            self._c["bytes_out"] += n
            self._tlp_rtx = False
        else:
            n = min(mss, off)
            if n <= 0:
                return
            seqno = sq.add(self.snd_nxt, -n)
            self._tlp_rtx = True
            self._c["retransmits"] += 1
        start = sq.diff(seqno, una)
        self.layer.queue_raw(self, self._segment(
            seqno, self.rcv_nxt, ACK | PSH, bytes(self._sndbuf[start:start + n]), now))
        self._tlp_end = self.snd_nxt
        self._tlp_flight = self._flight()
        self._c["tlp_probes"] += 1
        self._timers[_T_RTX] = now + self.rto
        self._last_activity = now

    def _tlp_acked(self, seg: Segment, ack: int) -> None:
        """The probe's episode ends (RFC 8985 §7.4). A resent probe ACKed without a
        D-SACK (RFC 2883) of it repaired a real loss: respond as to a loss."""
        self._tlp_end = None
        if not self._tlp_rtx:
            return
        self._tlp_rtx = False
        sack = seg.opts.sack
        if sack and sq.le(sack[0][1], ack):
            self._c["tlp_spurious"] += 1  # D-SACK: the original had arrived
            return
        if not self._in_recovery:
            self._c["tlp_recoveries"] += 1
            self.ssthresh = max(self._tlp_flight // 2, 2 * self.mss)
            self.cwnd = min(self.cwnd, self.ssthresh)

    def _dupack(self, now: float) -> None:
        self._dupacks += 1
        self._c["dupacks_in"] += 1
        mss = self.mss
        if self._in_recovery:
            if not self.sack_ok:
                self.cwnd += mss  # inflate (RFC 5681 §3.2 step 4); SACK uses pipe instead
            self._want_output()
        elif not self._maybe_recover(now) and self._limited_transmit():
            self._want_output()

    def _maybe_recover(self, now: float) -> bool:
        """Enter fast retransmit / loss recovery (RFC 5681 §3.2, RFC 6582 §3.2 step 2,
        RFC 6675 §5) when loss is seen and the last recovery's point is passed.

        ``_recover`` holds SND.MAX at the last entry, so RFC 6582's "SND.UNA beyond
        recover (= the highest sequence sent)" is SND.UNA >= _recover.
        """
        mss = self.mss
        if (self._dupacks >= self._dupthresh() or (
                self.sack_ok and self._sacked_bytes() >= mss)) and \
                sq.ge(self.snd_una, self._recover):
            # With SACK one full segment SACKed above the hole is taken as loss: a LAN
            # seldom reorders, and small flights would otherwise wait for the RTO.
            self._c["fast_retransmits"] += 1
            self.ssthresh = max(self._flight() // 2, 2 * mss)
            self.cwnd = self.ssthresh + 3 * mss
            self._recover = self.snd_max
            self._retransmitted = True
            self._in_recovery = True
            self._rtx_next = self.snd_una
            self._rtx_at.clear()
            if self.sack_ok:
                self.cwnd = self.ssthresh  # RFC 6675 §5 step 4.2
            self._timers[_T_RTX] = now + self.rto
            self._timers[_T_PTO] = None
            self._want_output()
            return True
        return False

    def _limited_transmit(self) -> bool:
        """RFC 3042: the first two duplicate ACKs may each send one new segment."""
        return not self._in_recovery and 0 < self._dupacks < 3

    def _dupthresh(self) -> int:
        """3, or fewer for a small flight with nothing new to send (RFC 5827 §3.1)."""
        segs = -(-self._flight() // self.mss)
        unsent = len(self._sndbuf) - sq.diff(self.snd_nxt, self.snd_una)
        if segs < 4 and unsent <= 0:
            return max(segs - 1, 1)
        return 3

    def _update_scoreboard(self, blocks: list[tuple[int, int]]) -> None:
        una, top = self.snd_una, self.snd_max
        board = self._peer_sacked
        for left, right in blocks:
            if not (sq.lt(left, right) and sq.ge(left, una) and sq.le(right, top)):
                continue  # stale or bogus block (RFC 2018 §4, RFC 5961 spirit)
            board.append((left, right))
        if not board:
            return
        board.sort(key=lambda b: sq.diff(b[0], una))
        merged: list[tuple[int, int]] = [board[0]]
        for left, right in board[1:]:
            pl, pr = merged[-1]
            if sq.le(left, pr):
                if sq.gt(right, pr):
                    merged[-1] = (pl, right)
            else:
                merged.append((left, right))
        self._peer_sacked = merged[:64]

    def _prune_scoreboard(self) -> None:
        if self._peer_sacked:
            una = self.snd_una
            self._peer_sacked = [(max(left, una, key=lambda v: sq.diff(v, una)), right)
                                 for left, right in self._peer_sacked if sq.gt(right, una)]

    def _sacked_bytes(self) -> int:
        return sum(sq.diff(r, left) for left, r in self._peer_sacked)

    def _receive_data(self, seqno: int, payload: memoryview, now: float) -> None:
        c = self._c
        if self._ack_now and self._ooo:
            # The duplicate ACK an earlier out-of-order segment of this batch is owed goes
            # now, before this segment changes what we would report: one immediate ACK
            # per out-of-order segment (RFC 5681 §4.2), each with the SACK blocks as they
            # stood after its segment (RFC 2018 §4), not one for the whole batch. At heavy
            # ACK loss a batch's single ACK lost its SACK news until the sender's next
            # RTO; a Linux sender then took the late SACKs as RTT samples of seconds and
            # backed off its RTO past two minutes.
            self._c["dupacks_out"] += 1
            self.layer.queue_raw(self, self._segment(self.snd_nxt, self.rcv_nxt, ACK, b"",
                                                     now))
        off = sq.diff(self.rcv_nxt, seqno)
        if off > 0:  # starts before rcv_nxt: trim the old part
            if off >= len(payload):
                c["dup_data"] += 1
                self._dsack = (seqno, sq.add(seqno, len(payload)))
                self._send_ack_now()
                return
            payload = payload[off:]
            seqno = self.rcv_nxt
        # Trim to the window we advertised
        room = sq.diff(self._rcv_adv, seqno)
        if room <= 0:
            c["beyond_window"] += 1
            self._send_ack_now()
            return
        if len(payload) > room:
            payload = payload[:room]
        if seqno == self.rcv_nxt:
            n = len(payload)
            # Keep a view of the frame when it is immutable and mostly payload (a peer
            # sending tiny segments must not pin whole frames in memory); else copy.
            frame = payload.obj
            keep = isinstance(frame, bytes) and n * 4 >= len(frame)
            self._rcvq.append(payload if keep else bytes(payload))
            self._rcv_len += n
            self.rcv_nxt = sq.add(self.rcv_nxt, len(payload))
            c["bytes_in"] += len(payload)
            if self._ooo:
                self._drain_ooo()
                self._ack_now = True
            self._ack_pending = True
            self._want_output()
            self._notify()
        else:
            self._insert_ooo(seqno, payload)
            self._send_ack_now()  # duplicate ACK with SACK blocks (RFC 5681 §4.2)

    def _insert_ooo(self, seqno: int, payload: memoryview) -> None:
        c = self._c
        c["ooo_segments"] += 1
        ooo = self._ooo
        if ooo:
            ls, ld = ooo[-1]
            if seqno == sq.add(ls, len(ld)):
                # The common case behind a hole: the next segment extends the last block
                # in place (amortised O(1); merging by copying was quadratic: seconds of
                # CPU for one loss in a 4 MiB window).
                ld += payload
                self._ooo_bytes += len(payload)
                self._sack_touch(ls)
                return
        data = bytearray(payload)
        base = self.rcv_nxt
        start = sq.diff(seqno, base)
        end = start + len(data)
        new: list[tuple[int, bytearray]] = []
        inserted = False
        for s, d in self._ooo:
            ss = sq.diff(s, base)
            se = ss + len(d)
            if se < start or ss > end:  # disjoint and not adjacent
                if not inserted and ss > end:
                    new.append((seqno, data))
                    inserted = True
                new.append((s, d))
                continue
            # overlapping or adjacent: merge into (seqno, data)
            lo = min(start, ss)
            hi = max(end, se)
            merged = bytearray(hi - lo)
            merged[ss - lo:se - lo] = d
            merged[start - lo:end - lo] = data
            seqno, data, start, end = sq.add(base, lo), merged, lo, hi
        if not inserted:
            new.append((seqno, data))
        if len(new) > self.config.ooo_max_segments:
            # Memory bound: drop the furthest block (the peer retransmits it).
            c["ooo_overflow"] += 1
            new.pop()
        self._ooo = new
        self._ooo_bytes = sum(len(d) for _, d in new)
        self._sack_touch(seqno)

    def _sack_touch(self, left: int) -> None:
        """The block starting at ``left`` changed: first in the SACK list (RFC 2018 §4)."""
        if left in self._sack_recent:
            self._sack_recent.remove(left)
        self._sack_recent.insert(0, left)
        del self._sack_recent[4:]

    def _drain_ooo(self) -> None:
        while self._ooo:
            s, d = self._ooo[0]
            off = sq.diff(self.rcv_nxt, s)
            if off < 0:
                break
            self._ooo.pop(0)
            if off < len(d):
                self._rcvq.append(memoryview(d)[off:])
                self._rcv_len += len(d) - off
                self.rcv_nxt = sq.add(s, len(d))
                self._c["bytes_in"] += len(d) - off
        self._ooo_bytes = sum(len(d) for _, d in self._ooo)
        live = {s for s, _ in self._ooo}
        self._sack_recent = [s for s in self._sack_recent if s in live]

    def _receive_fin(self, now: float) -> None:
        self._fin_received = True
        self.rcv_nxt = sq.add(self.rcv_nxt, 1)
        self._c["fin_in"] += 1
        self._send_ack_now()
        if self.state == TcpState.ESTABLISHED:
            self.state = TcpState.CLOSE_WAIT
        elif self.state == TcpState.FIN_WAIT_1:
            if self._fin_acked():
                self._enter_time_wait(now)
            else:
                self.state = TcpState.CLOSING
        elif self.state == TcpState.FIN_WAIT_2:
            self._enter_time_wait(now)
        self._notify()

    def _enter_time_wait(self, now: float) -> None:
        self.state = TcpState.TIME_WAIT
        self._timers = [None] * _N_TIMERS
        self._timers[_T_TIMEWAIT] = now + 2 * self.config.msl
        self._notify()

    def _enter_closed(self, error: TcpError | None, bury_at: float | None = None) -> None:
        """Enter CLOSED (the end of every connection). With ``bury_at`` (the time; an
        abort or a timeout) a synchronized connection is buried (``TcpLayer.bury``): its
        RST is sent again when the path to the peer works again."""
        if bury_at is not None and self.state in _BURIED_STATES:
            self.layer.bury(self, bury_at)
        if error is not None and self.error is None:
            self.error = error
            self._c["errors_" + error.reason] += 1
        self.state = TcpState.CLOSED
        self._timers = [None] * _N_TIMERS
        self._sndbuf.clear()
        self._ooo.clear()
        self._ooo_bytes = 0
        self._place_buf = None
        self.place_then = None
        self.placement_refill = None
        self.layer.forget(self)
        self._notify()

    # ---------------------------------------------------------------- timers
    def next_deadline(self) -> float | None:
        """The earliest timer, or None."""
        best: float | None = None
        for t in self._timers:
            if t is not None and (best is None or t < best):
                best = t
        return best

    def on_deadline(self, now: float) -> None:
        """Fire the timers that are due."""
        t = self._timers
        c = self._c
        giveup = t[_T_GIVEUP]
        if giveup is not None and now >= giveup:
            if self.state == TcpState.SYN_SENT:
                self._enter_closed(TcpError(
                    "timeout", f"connect to {_ip(self.remote_ip)}:{self.remote_port} timed out"))
            else:
                self._enter_closed(TcpError(
                    "timeout", f"no acknowledgement from {_ip(self.remote_ip)}:"
                    f"{self.remote_port} for {self.config.user_timeout:.0f} s"),
                    bury_at=now)
            return
        tw = t[_T_TIMEWAIT]
        if tw is not None and now >= tw:
            if self.state == TcpState.FIN_WAIT_2:
                c["fin_wait_2_timeouts"] += 1
            self._enter_closed(None)
            return
        rtx = t[_T_RTX]
        if rtx is not None and now >= rtx:
            self._on_rtx_timeout(now)
        per = t[_T_PERSIST]
        if per is not None and now >= per:
            self._on_persist(now)
        pto = t[_T_PTO]
        if pto is not None and now >= pto:
            self._on_pto(now)
        ka = t[_T_KEEPALIVE]
        if ka is not None and now >= ka:
            self._on_keepalive(now)
        rack = t[_T_RACK]
        if rack is not None and now >= rack:
            t[_T_RACK] = None
            # RACK's rule (RFC 8985 §6.2) wants evidence: a segment sent later was
            # delivered. Without any (no ACK brought news since those resends: the
            # resends or all ACKs were lost, or the path is dead) the resend still goes,
            # but the next such timer waits twice as long, and it is never armed past the
            # RTO: a dead path sees a few resends per RTO period, then the RTO's backoff.
            if self._in_recovery and self.sack_ok:
                self._c["rack_timeouts"] += 1
                progress = self._progress_at
                if not any(ts < progress for ts in self._rtx_at.values()):
                    self._rack_backoff += 1  # no news since: wait twice as long next
                self._want_output()  # _retransmit_holes resends what the gate let go

    def _rtt_sample(self, r: float) -> None:
        """RFC 6298 §2 estimator."""
        r = max(r, 0.0)
        if self.srtt is None:
            self.srtt = r
            self.rttvar = r / 2
        else:
            self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - r)
            self.srtt = 0.875 * self.srtt + 0.125 * r
        self._rto_base = min(max(self.srtt + max(0.001, 4 * self.rttvar), self.config.min_rto),
                             self.config.max_rto)
        self.rto = min(self._rto_base * (1 << self._backoff), self.config.max_rto)

    def _on_rtx_timeout(self, now: float) -> None:
        c = self._c
        if self.state in (TcpState.SYN_SENT, TcpState.SYN_RECEIVED):
            if self._syn_tries > self.config.syn_retries:
                self._enter_closed(TcpError(
                    "timeout", f"connect to {_ip(self.remote_ip)}:{self.remote_port} timed out"))
                return
            if self._syn_tries:
                c["syn_retransmits"] += 1
                self._backoff += 1
            self._syn_tries += 1
            self._rtt_time = now
            self.layer.queue_raw(self, self._syn_segment(now) if self.state == TcpState.SYN_SENT
                                 else self._synack_segment(now))
            self.snd_max = sq.add(self.iss, 1)
            self.snd_nxt = self.snd_max
            self._timers[_T_RTX] = now + min(self.config.initial_rto * (1 << self._backoff),
                                             self.config.max_rto)
            return
        if self._flight() <= 0:
            self._timers[_T_RTX] = None
            return
        # RFC 6298 §5.4-5.7 and RFC 5681 §3.1 (loss window)
        c["rto_expired"] += 1
        if self._timers[_T_GIVEUP] is None:
            self._timers[_T_GIVEUP] = now + self.config.user_timeout
        if self._backoff == 0:
            if self.ts_ok and self.config.spurious_rto_undo and self.rto >= 0.002:
                self._undo = (self.cwnd, self.ssthresh)  # RFC 4015 §3: kept for undo
                self._rto_tsval = self._ts_now(now)  # RFC 3522 §2: RetransmitTS
            self.ssthresh = max(self._flight() // 2, 2 * self.mss)
        self.cwnd = self.mss
        self._tlp_end = None  # RFC 8985 §7.4: an RTO ends the probe's episode
        self._tlp_rtx = False
        self._timers[_T_PTO] = None
        self._backoff = min(self._backoff + 1, 16)
        self.rto = min(self._rto_base * (1 << self._backoff), self.config.max_rto)
        self._dupacks = 0
        self._recover = self.snd_max
        self._retransmitted = True
        self._rtt_seq = None
        self._rtx_at.clear()
        self._timers[_T_RACK] = None
        if self.sack_ok:
            # RFC 6675 §5.1: keep the scoreboard and resend only what is not SACKed; a
            # second RTO in a row may mean the receiver reneged (RFC 2018 §8): forget it.
            if self._backoff >= 2:
                self._peer_sacked.clear()
            self._in_recovery = True
            self._loss_state = True
        else:
            self._in_recovery = False
            self.snd_nxt = self.snd_una  # go back N
        self._timers[_T_RTX] = now + self.rto
        self._want_output()

    def _on_persist(self, now: float) -> None:
        """Zero-window probe (RFC 9293 §3.8.6.1): one byte past the window."""
        self._timers[_T_PERSIST] = None
        unsent = len(self._sndbuf) - sq.diff(self.snd_nxt, self.snd_una)
        if unsent <= 0:
            return
        off = sq.diff(self.snd_nxt, self.snd_una)
        room = self.snd_wnd - off
        if room > 0:
            # SWS override (RFC 9293 §3.8.6.2.1): send what the small window takes.
            self._c["sws_override"] += 1
            n = min(room, self.mss, unsent)
            self.layer.queue_raw(self, self._segment(
                self.snd_nxt, self.rcv_nxt, ACK | PSH, bytes(self._sndbuf[off:off + n]), now))
            self.snd_nxt = sq.add(self.snd_nxt, n)
            if sq.gt(self.snd_nxt, self.snd_max):
                self.snd_max = self.snd_nxt
            if self._timers[_T_RTX] is None:
                self._timers[_T_RTX] = now + self.rto
            return
        self._c["window_probes"] += 1
        if off < len(self._sndbuf):
            probe = bytes(self._sndbuf[off:off + 1])
            self.layer.queue_raw(self, self._segment(self.snd_nxt, self.rcv_nxt, ACK, probe, now))
            self.snd_nxt = sq.add(self.snd_nxt, 1)
            if sq.gt(self.snd_nxt, self.snd_max):
                self.snd_max = self.snd_nxt
        self._persist_backoff += 1
        if self._timers[_T_GIVEUP] is None:
            self._timers[_T_GIVEUP] = now + self.config.user_timeout
        self._timers[_T_PERSIST] = now + min(self.rto * (1 << self._persist_backoff),
                                             self.config.max_rto)

    def _arm_keepalive(self, now: float) -> None:
        idle = self.config.keepalive_idle
        self._timers[_T_KEEPALIVE] = None if idle is None else now + idle

    def _on_keepalive(self, now: float) -> None:
        """RFC 1122 §4.2.3.6: a segment with SEG.SEQ = SND.NXT-1 and no data."""
        idle = self.config.keepalive_idle
        if idle is None or self.state != TcpState.ESTABLISHED:
            self._timers[_T_KEEPALIVE] = None
            return
        quiet = now - self._last_activity
        if quiet < idle and self._keepalive_sent == 0:
            self._timers[_T_KEEPALIVE] = self._last_activity + idle
            return
        if self._keepalive_sent >= self.config.keepalive_probes:
            self._enter_closed(TcpError(
                "timeout", f"keepalive: {_ip(self.remote_ip)}:{self.remote_port} did not answer "
                f"{self._keepalive_sent} probes"), bury_at=now)
            return
        self._keepalive_sent += 1
        self._c["keepalive_probes"] += 1
        self.layer.queue_raw(self, self._segment(sq.add(self.snd_nxt, -1), self.rcv_nxt, ACK,
                                                 b"", now, False))
        self._timers[_T_KEEPALIVE] = now + self.config.keepalive_interval

    # ---------------------------------------------------------------- output
    def output(self, now: float, out: list[OutSegment]) -> None:
        """Append every segment that is due now to ``out`` (RFC 9293 §3.10.2, RFC 5681)."""
        self.needs_output = False
        state = self.state
        if state in (TcpState.CLOSED, TcpState.SYN_SENT, TcpState.SYN_RECEIVED):
            if state != TcpState.CLOSED and self._timers[_T_RTX] is not None and \
                    now >= (self._timers[_T_RTX] or 0.0):
                self._on_rtx_timeout(now)
            return
        if state == TcpState.TIME_WAIT:
            if self._ack_pending:
                out.append(self._segment(self.snd_nxt, self.rcv_nxt, ACK, b"", now))
            return
        sent = 0
        if self._in_recovery and self.sack_ok:
            sent += self._retransmit_holes(now, out)
            self._arm_rack(now)
        elif self._in_recovery and self._rtx_next == self.snd_una and \
                sq.lt(self.snd_una, self.snd_nxt):
            sent += self._retransmit_one(self.snd_una, now, out)
            self._rtx_next = sq.add(self.snd_una, 1)
        new = self._send_new(now, out)
        if new and self._timers[_T_PTO] is None:
            self._arm_pto(now)
        sent += new
        if (self._ack_pending or self._ack_now) and not sent:
            out.append(self._segment(self.snd_nxt, self.rcv_nxt, ACK, b"", now))

    def _retransmit_one(self, at: int, now: float, out: list[OutSegment]) -> int:
        off = sq.diff(at, self.snd_una)
        chunk = memoryview(self._sndbuf)[off:off + self.mss]
        if not chunk:
            return 0
        out.append(self._segment(at, self.rcv_nxt, ACK | PSH, chunk, now))
        chunk.release()
        self._c["retransmits"] += 1
        return 1

    def _rtx_gate(self) -> float:
        """How long a resent hole segment is given before it counts as lost again."""
        if self.srtt is None:
            return self.rto
        return max(2 * self.srtt + 4 * self.rttvar, 0.004)

    def _retransmit_holes(self, now: float, out: list[OutSegment]) -> int:
        """SACK loss recovery (RFC 6675 §5): resend lost bytes as the pipe allows.

        Lost means not SACKed and below the highest SACKed byte (after an RTO: below
        SND.MAX). A resent segment is not resent again for about two RTTs, so lost
        retransmissions are found and resent without waiting for an RTO (as RACK does,
        RFC 8985).
        """
        board = self._peer_sacked
        una = self.snd_una
        if self._loss_state:
            limit = self.snd_max
        elif board:
            limit = board[-1][1]
        else:
            limit = sq.add(una, min(self.mss, self._flight()))
        gate = now - self._rtx_gate()
        mss = self.mss
        rtx_at = self._rtx_at
        holes: list[tuple[int, int]] = []  # [lo, hi) gaps between SACKed ranges
        pos = una
        for left, right in board:
            if sq.ge(left, limit):
                break
            if sq.lt(pos, left):
                holes.append((pos, left))
            if sq.gt(right, pos):
                pos = right
        if sq.lt(pos, limit):
            holes.append((pos, limit))
        lost = sum(sq.diff(hi, lo) for lo, hi in holes)
        for k in [k for k in rtx_at if sq.lt(k, una)]:
            del rtx_at[k]  # acknowledged since
        in_flight_rtx = mss * sum(1 for t in rtx_at.values() if t > gate)
        pipe = max(0, self._flight() - self._sacked_bytes() - lost + in_flight_rtx)
        budget = self.cwnd - pipe
        sent = 0
        for lo, hi in holes:
            seg = lo
            while sq.lt(seg, hi):
                n = min(mss, sq.diff(hi, seg))
                t_sent = rtx_at.get(seg)
                if t_sent is None or t_sent <= gate:
                    if budget <= 0 and (sent or pipe > 0):
                        self._pipe_after = pipe
                        return sent
                    off = sq.diff(seg, una)
                    chunk = memoryview(self._sndbuf)[off:off + n]
                    if not chunk:
                        if seg == self._fin_seq:  # our FIN is lost too
                            out.append(self._segment(seg, self.rcv_nxt, ACK | FIN, b"", now))
                            rtx_at[seg] = now
                            self._c["retransmits"] += 1
                            sent += 1
                        break
                    out.append(self._segment(seg, self.rcv_nxt, ACK | PSH, chunk, now))
                    chunk.release()
                    rtx_at[seg] = now
                    self._c["retransmits"] += 1
                    sent += 1
                    budget -= n
                    pipe += n
                seg = sq.add(seg, n)
        self._pipe_after = pipe
        return sent

    def _arm_rack(self, now: float) -> None:
        """After a pass of SACK recovery: wake when the earliest resent segment still
        inside its gate (:meth:`_rtx_gate`) leaves it, so that a
        lost retransmission is resent then even if no ACK comes to trigger output (RACK's
        reordering timer, RFC 8985 §6.3), backed off while no ACK brings news (see
        :meth:`on_deadline`). Without it each lost retransmission waited for the RTO,
        which backs off too and restarts from one segment: at 20% loss a 16 MiB send to
        Linux took 27 s."""
        gate = self._rtx_gate()
        pending = [t for t in self._rtx_at.values() if t > now - gate]
        t = self._timers
        if not pending:
            t[_T_RACK] = None
            return
        at = min(pending) + gate * (1 << min(self._rack_backoff, 16))
        rto = t[_T_RTX]
        t[_T_RACK] = at if rto is None or at < rto else None

    def _tso_bytes(self) -> int:
        """Payload of the largest TSO super-segment: whole MSS-sized pieces that, with the
        IP header and our TCP header (timestamps, never SACK blocks), fit the link's
        ``tso_max``; 0 when the layer has no TSO or fewer than two pieces fit."""
        tso_max = self.layer.tso_max
        if not tso_max:
            return 0
        mss = self.mss
        room = tso_max - (20 if len(self.remote_ip) == 4 else 40) - (32 if self.ts_ok else 20)
        k = room // mss
        return k * mss if k >= 2 else 0

    def _send_new(self, now: float, out: list[OutSegment]) -> int:
        """New data (and data after a go-back-N) as cwnd, the peer's window and sender
        SWS avoidance allow, then our FIN.

        TSO (``layer.tso_max``): consecutive full-sized segments of new data leave as one
        :class:`TsoSegment` of up to :meth:`_tso_bytes` (bounded by cwnd, the peer's
        window and the data), cut by the link into exactly the segments this loop would
        send one by one, which are what it counts (``segments_out``, RTT timing by the
        first). SACK blocks never ride on them (a full-sized segment has no room for
        them, see :meth:`_segment`). Retransmissions stay MSS-sized.

        Runs (``layer.tx_runs``, no TSO, IPv4, timestamps and no SACK block to carry):
        the full-sized segments this loop would send one by one leave as one
        :class:`SegmentRun`, the same segments counted the same (``segments_out``,
        ``bytes_out``, ``retransmits`` for those below SND.MAX after a go-back-N), for
        the interface to frame in one loop."""
        buf_len = len(self._sndbuf)
        if not self._fin_queued and sq.diff(self.snd_nxt, self.snd_una) >= buf_len:
            return 0  # every byte sent, no FIN to send: what the loop below finds
        sent = 0
        mss = self.mss
        tso = self._tso_bytes() if self.layer.tso_max else 0
        if self._in_recovery and self.sack_ok:
            usable_total = self.cwnd - self._pipe_after
        else:  # BSD-style: the window less what is between SND.UNA and SND.NXT
            cwnd = self.cwnd + (self._dupacks * mss if self._limited_transmit() else 0)
            usable_total = min(self.snd_wnd, cwnd) - sq.diff(self.snd_nxt, self.snd_una)
        # The common case, built at once (build_ts): timestamps and no SACK block to carry
        # (exactly when _segment would add none); window and TSval are the same for every
        # segment of this pass, as _segment would compute them each time.
        fast = self._packs_at_once()
        # Runs of full-sized segments (SegmentRun): the same segments, built with their
        # frames by the interface; only without TSO, over IPv4, for a consumer that
        # frames them (layer.tx_runs).
        runs = fast and not tso and self.layer.tx_runs and len(self.remote_ip) == 4
        window = ts_val = 0
        while True:
            off = sq.diff(self.snd_nxt, self.snd_una)
            unsent = buf_len - off
            usable = min(usable_total, self.snd_wnd - off)
            if unsent <= 0:
                break
            if usable <= 0:
                if self.snd_wnd == 0 and self._timers[_T_PERSIST] is None and \
                        self._flight() == 0:
                    self._timers[_T_PERSIST] = now + self.rto
                break
            n = min(mss, unsent, usable)
            # Sender SWS avoidance (RFC 9293 §3.8.6.2.1) without Nagle: send a full
            # segment, the tail of the buffer, or at least half the peer's max window.
            if n < mss and n < unsent and n < self.max_snd_wnd // 2:
                if self._flight() == 0 and self._timers[_T_PERSIST] is None:
                    self._timers[_T_PERSIST] = now + self.rto  # SWS override timer
                break
            segs = 1
            if tso and n == mss and self.snd_nxt == self.snd_max:
                segs = min(tso, unsent, usable) // mss
                n = segs * mss
            elif runs and n == mss and min(unsent, usable) >= 2 * mss:
                # The full-sized segments this loop would send one by one from here (the
                # window and the data allow k of them; only the last can carry PSH), as
                # one SegmentRun: the same bytes, counted the same.
                k = min(unsent, usable) // mss
                n = k * mss
                if not sent:
                    window, ts_val = self._stamp(now)
                view = memoryview(self._sndbuf)
                payload = view[off:off + n].tobytes()
                view.release()
                out.append(SegmentRun(self._pseudo_base, self.local_port, self.remote_port,
                                      self.snd_nxt, self.rcv_nxt, window, ts_val,
                                      self._ts_recent, payload, mss, n == unsent,
                                      self.layer.tx_csum_partial))
                c = self._c
                c["segments_out"] += k - 1  # the layer counts the list entry
                if sq.lt(self.snd_nxt, self.snd_max):  # a go-back-N resends these
                    c["retransmits"] += min(k, -(-sq.diff(self.snd_max, self.snd_nxt) // mss))
                self.snd_nxt = sq.add(self.snd_nxt, n)
                if sq.gt(self.snd_nxt, self.snd_max):
                    self.snd_max = self.snd_nxt
                usable_total -= n
                sent += k
                c["bytes_out"] += n
                continue
            view = memoryview(self._sndbuf)
            chunk = view[off:off + n]
            flags = ACK | (PSH if n == unsent else 0)
            if fast:
                if not sent:
                    window, ts_val = self._stamp(now)
                seg: bytes = build_ts(self._pseudo_base, self.local_port, self.remote_port,
                                      self.snd_nxt, self.rcv_nxt, flags, window, ts_val,
                                      self._ts_recent, chunk, self.layer.tx_csum_partial)
            else:
                seg = self._segment(self.snd_nxt, self.rcv_nxt, flags, chunk, now, segs == 1)
            if segs > 1:
                out.append(TsoSegment(seg, mss, self.layer.tx_csum_partial))
                self._c["segments_out"] += segs - 1  # the layer counts the list entry
                self._c["tso_out"] += 1
            else:
                out.append(seg)
            chunk.release()
            view.release()
            retrans = sq.lt(self.snd_nxt, self.snd_max)
            if retrans:
                self._c["retransmits"] += 1
            elif self._rtt_seq is None and not self.ts_ok:
                self._rtt_seq = sq.add(self.snd_nxt, min(n, mss))
                self._rtt_time = now
            self.snd_nxt = sq.add(self.snd_nxt, n)
            if sq.gt(self.snd_nxt, self.snd_max):
                self.snd_max = self.snd_nxt
            usable_total -= n
            sent += segs
            self._c["bytes_out"] += n
        # FIN once every byte is sent (RFC 9293 §3.10.4); again after a go-back-N
        if self._fin_queued and sq.diff(self.snd_nxt, self.snd_una) == buf_len and \
                (self._fin_seq is None or self.snd_nxt == self._fin_seq):
            if self._fin_seq is not None:
                self._c["retransmits"] += 1
            self._fin_seq = self.snd_nxt
            out.append(self._segment(self.snd_nxt, self.rcv_nxt, ACK | FIN, b"", now))
            self.snd_nxt = sq.add(self.snd_nxt, 1)
            if sq.gt(self.snd_nxt, self.snd_max):
                self.snd_max = self.snd_nxt
            self._c["fin_out"] += 1
            sent += 1
            if self.state == TcpState.ESTABLISHED:
                self.state = TcpState.FIN_WAIT_1
            elif self.state == TcpState.CLOSE_WAIT:
                self.state = TcpState.LAST_ACK
        if sent and self._timers[_T_RTX] is None and self._flight() > 0:
            self._timers[_T_RTX] = now + self.rto
        if sent:
            self._last_activity = now
        return sent


def _ip(b: bytes) -> str:
    """``10.0.0.1`` or ``[fd00::1]`` (bracketed so a port can follow, RFC 3986 §3.2.2)."""
    if len(b) == 16:
        return f"[{ipaddress.IPv6Address(b)}]"
    return ".".join(str(x) for x in b)
