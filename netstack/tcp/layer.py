"""The TCP layer of one interface: demultiplexing, ports, ISNs, resets (RFC 9293).

It is the transport the :class:`netstack.interface.Interface` calls: segments come in
through :meth:`TcpLayer.receive`, segments to send leave through :meth:`TcpLayer.output`.
Pure: no socket, no clock.

Both families share one layer: addresses are 4 bytes (IPv4) or 16 bytes (IPv6); the
checksum's pseudo-header follows the address length (RFC 8200 §8.1) and the MSS is
``mss`` for IPv4 and ``mss6`` (MTU - 60, RFC 8200 §8.3) for IPv6. A connection's local
address is ``local_ip`` / ``local_ip6`` for active opens (or the one given to
:meth:`TcpLayer.connect`) and the SYN's destination for passive ones.
"""

from __future__ import annotations

import hashlib
import random
import struct
from collections.abc import Callable

from netstack.checksum import ones_residue
from netstack.counters import Counters
from netstack.tcp import seq as sq
from netstack.tcp.connection import TcpConfig, TcpConnection, TcpError, TcpState
from netstack.tcp.segment import (
    ACK,
    RST,
    SYN,
    OutSegment,
    SegmentError,
    build,
    parse,
)

EPHEMERAL_LOW = 49152
EPHEMERAL_HIGH = 65535
#: How long a buried connection's RST waits for the path to come back (see
#: ``TcpLayer.bury``): about as long as a Linux peer retransmits (tcp_retries2 = 15).
TOMBSTONE_LIFE = 900.0
#: At most this many buried connections are remembered (the oldest go first).
TOMBSTONE_MAX = 64

_Key = tuple[int, bytes, int]  # (local port, remote ip, remote port)

#: What header prediction reads (RFC 9293 §3.1): ports, SEQ, ACK, the data offset and
#: flags word, the window; then, past checksum and urgent pointer, the first three
#: option words (the aligned timestamps layout when there is one, RFC 7323 Appendix A).
_PRED32 = struct.Struct("!HHIIHH4xIII")
_PRED20 = struct.Struct("!HHIIHH")


class Listener:
    """A listening port; completed connections wait in ``queue`` for :meth:`accept`."""

    def __init__(self, layer: TcpLayer, port: int, config: TcpConfig, backlog: int) -> None:
        self.layer = layer
        self.port = port
        self.config = config
        self.backlog = backlog
        self.queue: list[TcpConnection] = []
        self.callback: Callable[[Listener], None] | None = None

    def accept(self) -> TcpConnection | None:
        """The oldest established connection, or None."""
        return self.queue.pop(0) if self.queue else None


class TcpLayer:
    """All TCP connections of one local address."""

    def __init__(self, local_ip: bytes, mss: int = 1460, rng: random.Random | None = None,
                 counters: Counters | None = None, verify_checksums: bool = True) -> None:
        self.local_ip = local_ip
        self.mss = mss
        #: Our IPv6 source for active opens (None: no IPv6 address yet) and the IPv6 MSS.
        self.local_ip6: bytes | None = None
        self.mss6 = mss - 20
        self.rng = rng if rng is not None else random.Random()
        self.counters = counters if counters is not None else Counters()
        self.verify_checksums = verify_checksums
        #: Leave checksums of segments we send to the link (TAP offload, NEEDS_CSUM).
        self.tx_csum_partial = False
        #: TCP segmentation offload: the largest IP datagram (header included) the link
        #: cuts into segments itself; 0 (the default) sends every segment as it goes on
        #: the wire. With it, connections send new data as :class:`TsoSegment` s of whole
        #: multiples of their MSS (see :meth:`TcpConnection.output`).
        self.tso_max = 0
        #: The consumer of :meth:`output` frames :class:`SegmentRun` s (the interface
        #: does, :meth:`netstack.interface.Interface.attach_tcp` sets this): without TSO,
        #: consecutive full-sized segments of new data over IPv4 leave as one run each,
        #: framed in one loop. False (the default): every segment as bytes.
        self.tx_runs = False
        self._c = self.counters.layer("tcp")
        self._conns: dict[_Key, TcpConnection] = {}
        self._listeners: dict[int, Listener] = {}
        self._notified: list[TcpConnection] = []
        self._dirty: list[TcpConnection] = []
        self._raw: list[tuple[bytes, OutSegment]] = []
        self._secret = self.rng.getrandbits(128).to_bytes(16, "big")
        self._next_port = self.rng.randrange(EPHEMERAL_LOW, EPHEMERAL_HIGH + 1)
        self._rst_window = 0.0
        self._rst_count = 0
        self._now = 0.0
        #: Passive connections in SYN-RECEIVED at most; SYNs beyond are dropped and
        #: counted (``syn_dropped``) so a SYN flood cannot grow the table without bound.
        self.max_half_open = 64
        #: The connection whose consumer places received data (the latest to call
        #: ``set_placement``; :mod:`netstack.tcp.placement`), for the link's ``readv``.
        self.placing: TcpConnection | None = None
        #: Connections that ended without the peer surely knowing (see :meth:`bury`):
        #: 4-tuple key -> (our address, SND.NXT, until when the entry is kept).
        self._tombstones: dict[_Key, tuple[bytes, int, float]] = {}

    # ----------------------------------------------------------------- API
    def connect(self, remote_ip: bytes, remote_port: int, now: float,
                local_port: int | None = None, config: TcpConfig | None = None,
                local_ip: bytes | None = None) -> TcpConnection:
        """Active open to ``remote_ip:remote_port`` (4-byte IPv4 or 16-byte IPv6 address)
        from ``local_ip`` (default ``local_ip`` / ``local_ip6`` by family); the SYN leaves
        with the next output."""
        if not 0 < remote_port < 65536:
            raise TcpError("invalid", f"remote port {remote_port} is not in 1..65535")
        if len(remote_ip) == 4:
            src: bytes | None = local_ip or self.local_ip
            mss = self.mss
        elif len(remote_ip) == 16:
            src = local_ip or self.local_ip6
            mss = self.mss6
            if src is None:
                raise TcpError("invalid", "no IPv6 address to connect from")
        else:
            raise TcpError("invalid", f"remote address of {len(remote_ip)} bytes is "
                           "neither IPv4 nor IPv6")
        assert src is not None
        if len(src) != len(remote_ip):
            raise TcpError("invalid", "local and remote addresses of different families")
        port = local_port if local_port is not None else self._pick_port(remote_ip, remote_port)
        key = (port, remote_ip, remote_port)
        if key in self._conns:
            raise TcpError("in_use", f"local port {port} to this peer is in use")
        iss = self._isn(src, port, remote_ip, remote_port, now)
        conn = TcpConnection(self, src, port, remote_ip, remote_port, iss, mss,
                             config or TcpConfig(), self.counters, now)
        self._conns[key] = conn
        self._tombstones.pop(key, None)  # the 4-tuple lives again: never reset it
        conn.start_connect(now)
        return conn

    def listen(self, port: int, config: TcpConfig | None = None, backlog: int = 16) -> Listener:
        """Passive OPEN on ``port`` (RFC 9293 §3.10.1); used by tests and the NBD/TCP export."""
        if port in self._listeners:
            raise TcpError("in_use", f"port {port} is already listening")
        lst = Listener(self, port, config or TcpConfig(), backlog)
        self._listeners[port] = lst
        return lst

    def unlisten(self, port: int) -> None:
        """Stop listening on ``port`` (accepted connections stay)."""
        self._listeners.pop(port, None)

    def accepted(self, conn: TcpConnection) -> None:
        """A passive connection completed its handshake."""
        lst = self._listeners.get(conn.local_port)
        if lst is None or len(lst.queue) >= lst.backlog:
            conn.abort(self._now)
            return
        lst.queue.append(conn)
        if lst.callback is not None:
            lst.callback(lst)

    def connections(self) -> list[TcpConnection]:
        """Live connections (including TIME_WAIT)."""
        return list(self._conns.values())

    def take_notified(self) -> list[TcpConnection]:
        """Connections with news since the last call (each once)."""
        out = self._notified
        self._notified = []
        for c in out:
            c.notified = False
        return out

    def pending(self) -> bool:
        """Whether connections have news not yet taken or segments not yet output."""
        return bool(self._notified or self._dirty or self._raw)

    # ----------------------------------------------------- connection hooks
    def notify(self, conn: TcpConnection) -> None:
        """Called by a connection when it has news for its user."""
        self._notified.append(conn)

    def want_output(self, conn: TcpConnection) -> None:
        """Called by a connection that has segments to send."""
        self._dirty.append(conn)

    def queue_raw(self, conn: TcpConnection, segment: bytes) -> None:
        """A connection's segment outside the normal output pass (SYN, RST, probes)."""
        self._raw.append((conn.remote_ip, segment))

    def forget(self, conn: TcpConnection) -> None:
        """Remove a closed connection from the demultiplexing table."""
        key = (conn.local_port, conn.remote_ip, conn.remote_port)
        if self._conns.get(key) is conn:
            del self._conns[key]
        if self.placing is conn:
            self.placing = None

    def bury(self, conn: TcpConnection, now: float) -> None:
        """Remember ``conn``, a synchronized connection that ends without the peer surely
        knowing: aborted (its RST, RFC 9293 §3.10.5, may be lost on a path that is down)
        or timed out (no RST at all). The peer may keep sending on it; it learns only when
        a retransmission reaches us (RFC 9293 §3.10.7.1), after minutes of backoff, and a
        target may serve nothing else meanwhile (tgtd spins on the dead socket: see
        README). So when a handshake with the same peer completes later
        (:meth:`path_confirmed`: the path works again) the RST goes out once more:
        <SEQ=SND.NXT><CTL=RST>, accepted by an exact match of the peer's RCV.NXT (RFC 5961
        §3.2); if data of ours was lost the peer answers with a challenge ACK, and that ACK
        for a connection we no longer know is answered by the RST of RFC 9293 §3.10.7.1
        with the peer's own number. Kept for :data:`TOMBSTONE_LIFE` seconds, at most
        :data:`TOMBSTONE_MAX` (oldest dropped); counted as ``tombstones``."""
        key = (conn.local_port, conn.remote_ip, conn.remote_port)
        tombs = self._tombstones
        tombs.pop(key, None)
        tombs[key] = (conn.local_ip, conn.snd_nxt, now + TOMBSTONE_LIFE)
        self._c["tombstones"] += 1
        while len(tombs) > TOMBSTONE_MAX:
            del tombs[next(iter(tombs))]

    def path_confirmed(self, remote_ip: bytes, now: float) -> None:
        """A handshake with ``remote_ip`` completed: send the RST of every buried
        connection to that peer (see :meth:`bury`), counted as ``tombstone_resets``, and
        forget them; drop expired entries."""
        tombs = self._tombstones
        if not tombs:
            return
        self._now = now
        for key, (src, snd_nxt, until) in list(tombs.items()):
            if until <= now:
                del tombs[key]
            elif key[1] == remote_ip:  # (a live 4-tuple has no entry: connect pops it)
                del tombs[key]
                self._c["tombstone_resets"] += 1
                self.send_reset_for(src, remote_ip, key[0], key[2], snd_nxt, 0, RST)

    def send_reset_for(self, src: bytes, dst: bytes, sport: int, dport: int, seqno: int,
                       ack: int, flags: int) -> None:
        """Queue a RST (rate-limited to 100/s so we cannot be used as an amplifier)."""
        now = self._now
        if now - self._rst_window >= 1.0:
            self._rst_window = now
            self._rst_count = 0
        if self._rst_count >= 100:
            self._c["rst_rate_limited"] += 1
            return
        self._rst_count += 1
        self._c["rst_out"] += 1
        self._raw.append((dst, build(src, dst, sport, dport, seqno, ack, flags, 0,
                                     partial=self.tx_csum_partial)))

    # --------------------------------------------------------------- input
    def receive(self, src: bytes, dst: bytes, segment: memoryview, now: float,
                csum_ok: bool = False) -> None:
        """One TCP segment from IPv4 or IPv6 (RFC 9293 §3.10.7; addresses of 4 or 16 bytes).
        Bad segments are counted and dropped."""
        c = self._c
        self._now = now
        c["segments_in"] += 1
        if len(segment) < 20:
            c["bad_truncated"] += 1
            return
        # verify_checksum inlined (RFC 1071 by big integers, see netstack.checksum):
        # segment + pseudo-header sum to 0xFFFF, i.e. to a nonzero multiple of 0xFFFF
        # (IPv6's 32-bit length is congruent to its two words). The pseudo-header is added
        # to the segment's residue, not to its big integer (each big ``+`` copies it); the
        # total is never zero since the protocol number 6 is in it.
        if not csum_ok and self.verify_checksums and (
                ones_residue(segment) + int.from_bytes(src, "big") +
                int.from_bytes(dst, "big") + 6 + len(segment)) % 0xFFFF:
            c["bad_checksum"] += 1
            return
        # Header prediction first (TcpConnection.receive_predicted): the raw fields, no
        # option objects; anything else is parsed and goes the full way.
        if len(segment) >= 32:
            sport, dport, seqno, ack, offflags, window, tsopt, ts_val, ts_ecr = \
                _PRED32.unpack_from(segment)
        else:
            sport, dport, seqno, ack, offflags, window = _PRED20.unpack_from(segment)
            tsopt = ts_val = ts_ecr = 0
        conn = self._conns.get((dport, bytes(src), sport))
        if conn is not None and conn.receive_predicted(seqno, ack, offflags, window, tsopt,
                                                       ts_val, ts_ecr, segment, now):
            return
        try:
            seg = parse(segment)
        except SegmentError as e:
            c[e.reason if e.reason.startswith("bad_") else "bad_" + e.reason] += 1
            return
        if conn is None and seg.flags & (SYN | ACK | RST) == SYN and seg.dport in self._listeners:
            if self._half_open() >= self.max_half_open:
                c["syn_dropped"] += 1  # SYN flood: the peer retransmits when it is real
                return
            lst = self._listeners[seg.dport]
            key = (seg.dport, bytes(src), seg.sport)
            local = bytes(dst)
            conn = TcpConnection(self, local, seg.dport, bytes(src), seg.sport,
                                 self._isn(local, seg.dport, bytes(src), seg.sport, now),
                                 self.mss if len(local) == 4 else self.mss6,
                                 lst.config, self.counters, now)
            self._conns[key] = conn
            self._tombstones.pop(key, None)
            c["passive_opens"] += 1
            conn.start_passive(seg, now)
            return
        if conn is None or conn.state == TcpState.CLOSED:
            c["no_connection"] += 1
            self._reset_unknown(src, dst, seg.sport, seg.dport, seg.seq, seg.ack, seg.flags,
                                seg.seg_len)
            return
        conn.receive(seg, now)

    def receive_placed(self, src: bytes, header: memoryview, placed: int,
                       tail: memoryview, now: float, gap: memoryview | None = None,
                       then_n: int = 0) -> bool:
        """A segment whose payload the link read partly into the placing connection's
        buffer (:mod:`netstack.tcp.placement`): ``header`` is the TCP header alone,
        ``placed`` payload bytes are at the connection's placement target and ``tail``
        holds the rest (``gap`` and ``then_n``: a continuation's header and the bytes
        placed behind it, :meth:`TcpConnection.receive_predicted`). The link vouched for
        the checksum. True when it was the predicted
        in-order segment of that connection (taken and counted as :meth:`receive` would);
        False, with nothing changed, otherwise: the caller then joins the frame and hands
        it to the ordinary path."""
        conn = self.placing
        if conn is None:
            return False
        if len(header) == 32:
            sport, dport, seqno, ack, offflags, window, tsopt, ts_val, ts_ecr = \
                _PRED32.unpack_from(header)
        elif len(header) == 20:
            sport, dport, seqno, ack, offflags, window = _PRED20.unpack_from(header)
            tsopt = ts_val = ts_ecr = 0
        else:
            return False
        return self.receive_placed_fields(conn, src, sport, dport, seqno, ack, offflags,
                                          window, tsopt, ts_val, ts_ecr, header, now,
                                          placed, tail, gap, then_n)

    def receive_placed_fields(self, conn: TcpConnection, src: bytes, sport: int,
                              dport: int, seqno: int, ack: int, offflags: int, window: int,
                              tsopt: int, ts_val: int, ts_ecr: int, header: memoryview,
                              now: float, placed: int, tail: memoryview,
                              gap: memoryview | None = None, then_n: int = 0) -> bool:
        """:meth:`receive_placed` after its unpack, for a caller that read the TCP header
        fields already (``Interface.receive_placed`` reads all three headers at once):
        the segment must be ``conn``'s (the placing connection) and predicted."""
        if dport != conn.local_port or sport != conn.remote_port or src != conn.remote_ip:
            return False
        self._now = now
        if not conn.receive_predicted(seqno, ack, offflags, window, tsopt, ts_val, ts_ecr,
                                      header, now, placed, tail, gap, then_n):
            return False
        self._c["segments_in"] += 1
        return True

    def _reset_unknown(self, src: bytes, dst: bytes, sport: int, dport: int, seqno: int,
                       ack: int, flags: int, seg_len: int) -> None:
        # RFC 9293 §3.10.7.1: CLOSED state answers with RST (never to a RST)
        if flags & RST:
            return
        if flags & ACK:
            self.send_reset_for(dst, src, dport, sport, ack, 0, RST)
        else:
            self.send_reset_for(dst, src, dport, sport, 0, sq.add(seqno, seg_len), RST | ACK)

    # -------------------------------------------------------------- output
    def output(self, now: float) -> list[tuple[bytes, OutSegment]]:
        """Every segment due now, as (destination address, segment) pairs; the address is
        4 bytes (IPv4) or 16 bytes (IPv6) and tells the interface which IP to use. With
        :attr:`tso_max` set, new data may leave as :class:`TsoSegment` super-segments
        (``segments_out`` counts the segments on the wire, ``tso_out`` the
        super-segments); with :attr:`tx_runs`, full-sized segments may leave as
        :class:`SegmentRun` s (``segments_out`` counts their segments)."""
        self._now = now
        out = self._raw
        self._raw = []
        if self._dirty:
            dirty = self._dirty
            self._dirty = []
            segs: list[OutSegment] = []
            for conn in dirty:
                if not conn.needs_output:
                    continue
                conn.output(now, segs)
                if segs:
                    rip = conn.remote_ip
                    out.extend((rip, s) for s in segs)
                    segs.clear()
            if self._raw:
                out.extend(self._raw)
                self._raw = []
        if out:
            self._c["segments_out"] += len(out)
        return out

    def source_of(self, remote_ip: bytes, segment: bytes) -> bytes | None:
        """The local address of the connection an output segment belongs to (an IPv6
        interface has several addresses; the checksum was computed with this one), or
        None (a reset for an unknown connection)."""
        conn = self._conns.get(((segment[0] << 8) | segment[1], remote_ip,
                                (segment[2] << 8) | segment[3]))
        return None if conn is None else conn.local_ip

    # -------------------------------------------------------------- timers
    def next_deadline(self) -> float | None:
        """The earliest timer of any connection."""
        best: float | None = None
        for conn in self._conns.values():
            t = conn.next_deadline()
            if t is not None and (best is None or t < best):
                best = t
        if self._dirty or self._raw:
            return self._now
        return best

    def on_deadline(self, now: float) -> None:
        """Fire due timers of every connection."""
        self._now = now
        for conn in list(self._conns.values()):
            t = conn.next_deadline()
            if t is not None and t <= now:
                conn.on_deadline(now)

    # -------------------------------------------------------------- helpers
    def _half_open(self) -> int:
        return sum(1 for c in self._conns.values() if c.state == TcpState.SYN_RECEIVED)

    def _pick_port(self, remote_ip: bytes, remote_port: int) -> int:
        span = EPHEMERAL_HIGH - EPHEMERAL_LOW + 1
        for _ in range(span):
            port = self._next_port
            self._next_port = EPHEMERAL_LOW + (port + 1 - EPHEMERAL_LOW) % span
            if (port, remote_ip, remote_port) not in self._conns:
                return port
        raise TcpError("no_ports", "no free local port (all ephemeral ports in use)")

    def _isn(self, lip: bytes, lport: int, rip: bytes, rport: int, now: float) -> int:
        """RFC 6528 §3: ISN = M + F(localip, localport, remoteip, remoteport, secretkey)."""
        h = hashlib.sha256(self._secret + lip + lport.to_bytes(2, "big") + rip +
                           rport.to_bytes(2, "big")).digest()
        m = int(now * 250_000)  # a 4 microsecond timer
        return (m + int.from_bytes(h[:4], "big")) & sq.MASK


__all__ = ["TcpLayer"]
