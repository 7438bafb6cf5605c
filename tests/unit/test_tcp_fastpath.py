"""Header prediction (TcpConnection.receive_predicted) against the full receive path.

Two connections in identical states, one with header prediction and one without
(``TcpConfig.header_prediction``), are fed the same segments from a scripted peer: in
order, out of order, duplicated, with window changes, timestamps going backwards (PAWS),
odd options and flags, FIN and RST, while the application sends and reads. After every
segment both must be in the same state, have produced the same bytes (ACKs) and counted
the same (but for the ``fast_path*`` counters): the fast path is a subset of RFC 9293
§3.10.7 as the full path implements it.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netstack.tcp import seq as sq
from netstack.tcp.connection import TcpConfig, TcpConnection, TcpState
from netstack.tcp.layer import TcpLayer
from netstack.tcp.segment import (
    ACK,
    FIN,
    PSH,
    RST,
    SYN,
    OutSegment,
    TcpOptions,
    build,
    build_options,
    parse,
)
from tests.unit.tcp_sim import A_IP, B_IP, SimNet
from tests.unit.test_tcp import pair, transfer

PORT = 3260
#: The peer's byte stream: a segment at any sequence number carries the same bytes.
STREAM = random.Random(0).randbytes(1 << 20)
MSS = 1460


class Twins:
    """Our two connections (fast path on, off) and a scripted peer in front of them."""

    def __init__(self, seed: int, wscale: int = 7, timestamps: bool = True,
                 sack: bool = True, rcvbuf: int = 64 * 1024, irs: int | None = None,
                 keepalive: float | None = None) -> None:
        self.now = 100.0
        self.layers = [TcpLayer(A_IP, mss=MSS, rng=random.Random(seed)) for _ in range(2)]
        self.conns = [ly.connect(B_IP, PORT, self.now, config=TcpConfig(
            header_prediction=hp, rcvbuf=rcvbuf, sndbuf=256 * 1024, keepalive_idle=keepalive))
            for ly, hp in zip(self.layers, (True, False), strict=True)]
        syn_out = self.output()
        assert isinstance(syn_out[0][1], bytes)  # a SYN is never a run
        syn = parse(memoryview(syn_out[0][1]))
        assert syn.flags == SYN
        self.port = syn.sport
        self.irs = random.Random(seed + 1).getrandbits(32) if irs is None else irs
        self.peer_nxt = sq.add(self.irs, 1)  # the peer's SND.NXT
        self.peer_ts = random.Random(seed + 2).getrandbits(32)
        self.wnd_raw = 0xFFFF >> 1
        self.timestamps = timestamps
        opts = TcpOptions(mss=MSS, wscale=wscale, sack_perm=sack,
                          ts_val=self.peer_ts if timestamps else None,
                          ts_ecr=syn.opts.ts_val or 0)
        self.deliver(build(B_IP, A_IP, PORT, self.port, self.irs, sq.add(syn.seq, 1),
                           SYN | ACK, 0xFFFF, build_options(opts)))
        for c in self.conns:
            assert c.state == TcpState.ESTABLISHED
        self.sent: list[tuple[int, int]] = []  # (seq, length) the peer has sent
        self.holes: list[tuple[int, int]] = []
        self.read: list[bytes] = [b"", b""]

    @property
    def fast(self) -> TcpConnection:
        """The connection with header prediction."""
        return self.conns[0]

    def output(self) -> list[tuple[bytes, OutSegment]]:
        """Both layers' output, which must be identical; returns it."""
        outs = [ly.output(self.now) for ly in self.layers]
        assert outs[0] == outs[1]
        return outs[0]

    def deliver(self, seg: bytes) -> list[tuple[bytes, OutSegment]]:
        """One segment to both, then compare state, output and counters."""
        for ly in self.layers:
            ly.receive(B_IP, A_IP, memoryview(seg), self.now)
        return self.check()

    def check(self) -> list[tuple[bytes, OutSegment]]:
        """Both connections in the same state; same output and counters."""
        for ly in self.layers:
            ly.on_deadline(self.now)
        assert snapshot(self.conns[0]) == snapshot(self.conns[1])
        assert [c is self.conns[0] for c in self.layers[0].take_notified()] == \
            [c is self.conns[1] for c in self.layers[1].take_notified()]
        out = self.output()
        assert counters(self.layers[0]) == counters(self.layers[1])
        return out

    def segment(self, seqno: int, n: int, *, flags: int = ACK | PSH, ack: int | None = None,
                ts: int | None = None, opts: bytes | None = None,
                window: int | None = None) -> bytes:
        """A peer segment carrying the stream's bytes at ``seqno``."""
        off = sq.diff(seqno, sq.add(self.irs, 1)) % len(STREAM)
        payload = (STREAM + STREAM)[off:off + n]
        if opts is None:
            tso = TcpOptions(ts_val=self.peer_ts if ts is None else ts,
                             ts_ecr=self.fast._ts_now(self.now))
            opts = build_options(tso) if self.timestamps else b""
        return build(B_IP, A_IP, PORT, self.port, seqno,
                     self.fast.snd_una if ack is None else ack, flags,
                     self.wnd_raw if window is None else window, opts, payload)

    def app_send(self, n: int) -> None:
        """The application on both sides sends ``n`` bytes."""
        data = bytes([n & 0xFF]) * n
        assert self.conns[0].send(data) == self.conns[1].send(data)
        self.check()

    def app_read(self, n: int) -> None:
        """The application on both sides reads up to ``n`` bytes."""
        got = [c.recv(n) for c in self.conns]
        assert got[0] == got[1]
        self.check()


def snapshot(conn: TcpConnection) -> dict[str, Any]:
    """Everything a connection holds that a segment can change."""
    out: dict[str, Any] = {}
    for k, v in vars(conn).items():
        if k in ("layer", "_c", "callback", "config", "_hp"):
            continue
        if k == "_rcvq":  # the bytes, and which pieces are views of frames
            v = (b"".join(v), [(type(x).__name__, len(x)) for x in v])
        elif k == "error":
            v = None if v is None else (v.reason, str(v))
        elif k == "_ooo":
            v = [(s, bytes(d)) for s, d in v]
        out[k] = v
    return out


def counters(layer: TcpLayer) -> dict[str, int]:
    """The layer's TCP counters but the fast path's own."""
    return {k: v for k, v in layer.counters.layer("tcp").items()
            if v and not k.startswith("fast_path")}


def random_stream(tw: Twins, rng: random.Random, steps: int) -> None:
    """Drive both connections with a random mix of what a peer may send: mostly in-order
    data (the predicted case), disturbed often enough to leave and re-enter it."""
    for step in range(steps):
        late = step >= steps * 3 // 4  # FIN and RST only then: they end the bulk
        tw.now += rng.choice((0.0, 0.0001, 0.002, 0.05, 0.3))
        tw.peer_ts = (tw.peer_ts + rng.choice((0, 1, 1, 7))) & sq.MASK
        conn = tw.fast
        if sq.gt(tw.peer_nxt, conn._rcv_adv) or (tw.holes and rng.random() < 0.02):
            # What we refused (beyond the window) or lost comes again: go back N.
            tw.peer_nxt = conn.rcv_nxt
            tw.holes.clear()
        una, top = conn.snd_una, conn.snd_max
        flight = sq.diff(top, una)
        ack = sq.add(una, rng.randint(0, flight)) if flight and rng.random() < 0.5 else una
        n = rng.choice((1, 100, 536, MSS, MSS, MSS))
        r = rng.random()
        if r < 0.45:  # the next new data (in order unless there is a hole)
            tw.deliver(tw.segment(tw.peer_nxt, n, ack=ack))
            tw.sent.append((tw.peer_nxt, n))
            tw.peer_nxt = sq.add(tw.peer_nxt, n)
        elif r < 0.49:  # a hole: later data first
            gap = rng.choice((1, 100, MSS))
            tw.holes.append((tw.peer_nxt, gap))
            tw.peer_nxt = sq.add(tw.peer_nxt, gap)
            tw.deliver(tw.segment(tw.peer_nxt, n, ack=ack))
            tw.sent.append((tw.peer_nxt, n))
            tw.peer_nxt = sq.add(tw.peer_nxt, n)
        elif r < 0.59 and tw.holes:  # fill a hole (all of it or its start)
            s, g = tw.holes.pop(rng.randrange(len(tw.holes)))
            part = rng.choice((g, max(1, g // 2)))
            if part < g:
                tw.holes.append((sq.add(s, part), g - part))
            tw.deliver(tw.segment(s, part, ack=ack))
            tw.sent.append((s, part))
        elif r < 0.62 and tw.sent:  # a duplicate (retransmission)
            s, m = rng.choice(tw.sent)
            tw.deliver(tw.segment(s, m, ack=ack))
        elif r < 0.72:  # a pure ACK, sometimes of data never sent or long acknowledged
            a = ack
            if rng.random() < 0.1:
                a = sq.add(top, rng.randint(1, 5000))
            elif rng.random() < 0.1:
                a = sq.add(una, -rng.randint(1, 1 << 20))
            ahead = rng.choice((0, 0, 0, 0, 1, 3000))  # ahead: SND.WL1 moves past RCV.NXT
            tw.deliver(tw.segment(sq.add(tw.peer_nxt, ahead), 0, flags=ACK, ack=a))
        elif r < 0.75:  # the peer's window changes (to zero too)
            tw.wnd_raw = rng.choice((0, 1, 100, 0x7FFF, 0xFFFF))
            m = rng.choice((0, n))
            tw.deliver(tw.segment(tw.peer_nxt, m, ack=ack))
            tw.sent.append((tw.peer_nxt, m))
            tw.peer_nxt = sq.add(tw.peer_nxt, m)
        elif r < 0.78:  # timestamp from the past: PAWS
            tw.deliver(tw.segment(tw.peer_nxt, n, ack=ack,
                                  ts=sq.add(tw.peer_ts, -rng.randint(1, 1000))))
        elif r < 0.83:  # in order, but flags or options off the predicted layout
            variant = rng.randrange(5)
            tsopt = TcpOptions(ts_val=tw.peer_ts, ts_ecr=0)
            if variant == 0:
                seg = tw.segment(tw.peer_nxt, n, ack=ack, opts=b"")
            elif variant == 1:
                tsopt.sack = [(sq.add(una, -100), una)]
                seg = tw.segment(tw.peer_nxt, n, ack=ack, opts=build_options(tsopt))
            elif variant == 2:  # TS first, NOPs after: valid, not the aligned layout
                seg = tw.segment(tw.peer_nxt, n, ack=ack,
                                 opts=build_options(tsopt)[2:] + b"\x01\x01")
            else:
                seg = tw.segment(tw.peer_nxt, n, ack=ack,
                                 flags=ACK | rng.choice((0x20, 0x40, 0x80)))
            tw.deliver(seg)
            tw.sent.append((tw.peer_nxt, n))
            tw.peer_nxt = sq.add(tw.peer_nxt, n)
        elif r < 0.84:  # far outside the window
            tw.deliver(tw.segment(sq.add(tw.peer_nxt, rng.choice((1 << 20, -(1 << 20)))),
                                  n, ack=ack))
        elif r < 0.90:
            tw.app_send(rng.choice((1, 500, 3000, 20000)))
        elif r < 0.98:
            tw.app_read(rng.choice((1, 1000, 1 << 20, 1 << 20)))
        elif r < 0.987 and late:  # FIN (maybe behind a hole); a broken peer may go on
            m = rng.choice((0, n))
            tw.deliver(tw.segment(tw.peer_nxt, m, flags=ACK | FIN, ack=ack))
            tw.sent.append((tw.peer_nxt, m))
            tw.peer_nxt = sq.add(tw.peer_nxt, m + 1)
        elif r < 0.992:  # SYN in the window: challenge ACK
            tw.deliver(tw.segment(tw.peer_nxt, 0, flags=SYN | ACK, ack=ack))
        elif r < 0.995 and late:  # RST in the window: challenged, or the end
            tw.deliver(tw.segment(sq.add(conn.rcv_nxt, rng.choice((0, 1, 1))), 0, flags=RST))
        else:
            tw.check()
        if conn.state == TcpState.CLOSED:
            return


@pytest.mark.parametrize("seed", range(40))
def test_fast_path_matches_full_path_on_random_streams(seed: int) -> None:
    rng = random.Random(seed)
    tw = Twins(seed, wscale=rng.choice((0, 7, 14)), timestamps=seed % 4 != 3,
               sack=seed % 5 != 4, rcvbuf=rng.choice((16 * 1024, 64 * 1024, 1 << 20)),
               keepalive=rng.choice((None, 0.2, 1.0)))
    random_stream(tw, rng, 400)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), timestamps=st.booleans(),
       wscale=st.sampled_from((0, 2, 7, 14)), steps=st.integers(1, 300))
def test_fast_path_matches_full_path_property(seed: int, timestamps: bool, wscale: int,
                                              steps: int) -> None:
    tw = Twins(seed & 0xFFFF, wscale=wscale, timestamps=timestamps)
    random_stream(tw, random.Random(seed), steps)


def test_fast_path_across_the_sequence_wrap() -> None:
    """In-order data across 2**32 takes the fast path (and stays identical)."""
    tw = Twins(5, irs=sq.MASK - 3 * MSS)
    tw.deliver(tw.segment(tw.peer_nxt, MSS))  # learn the window field
    tw.peer_nxt = sq.add(tw.peer_nxt, MSS)
    start = _fast_count(tw)[0]
    for _ in range(6):
        tw.peer_ts += 1
        tw.deliver(tw.segment(tw.peer_nxt, MSS))
        tw.peer_nxt = sq.add(tw.peer_nxt, MSS)
        tw.app_read(1 << 20)
    assert tw.fast.rcv_nxt < 1 << 16  # wrapped
    assert _fast_count(tw)[0] - start == 6


def _established(**cfg: Any) -> Twins:
    tw = Twins(9, **cfg)
    tw.deliver(tw.segment(tw.peer_nxt, MSS))  # learn the window field: now predicted
    tw.peer_nxt = sq.add(tw.peer_nxt, MSS)
    return tw


def _fast_count(tw: Twins) -> tuple[int, int]:
    c = tw.fast.layer.counters.layer("tcp")
    return c["fast_path"], c["fast_path_ack"]


def test_in_order_bulk_takes_the_fast_path() -> None:
    """A clean bulk transfer: nearly every data segment and every ACK is predicted, and
    none with header prediction off."""
    for hp in (True, False):
        cfg = TcpConfig(header_prediction=hp)
        sim, ca, cb = pair(cfg_a=cfg, cfg_b=cfg)
        data = random.Random(3).randbytes(2 << 20)
        assert transfer(sim, ca, cb, data) == data
        rx = cb.layer.counters.layer("tcp")
        tx = ca.layer.counters.layer("tcp")
        data_segs = sum(1 for s, _, g in sim.sent if s == A_IP and parse(memoryview(g)).payload)
        if hp:
            assert rx["fast_path"] >= data_segs - 2
            assert tx["fast_path_ack"] >= 0.9 * tx["segments_in"]
        else:
            assert rx["fast_path"] == 0 and tx["fast_path_ack"] == 0


@pytest.mark.parametrize("timestamps", [True, False])
def test_predicted_segments(timestamps: bool) -> None:
    """In-order data (with or without PSH, also ACKing our data) and a pure ACK of new
    data take the fast path."""
    tw = _established(timestamps=timestamps)
    fp0, ack0 = _fast_count(tw)
    tw.peer_ts += 1
    tw.deliver(tw.segment(tw.peer_nxt, 100, flags=ACK))
    tw.peer_nxt = sq.add(tw.peer_nxt, 100)
    tw.app_send(3000)
    tw.peer_ts += 1
    tw.deliver(tw.segment(tw.peer_nxt, 100, ack=sq.add(tw.fast.snd_una, 1000)))
    tw.peer_nxt = sq.add(tw.peer_nxt, 100)
    tw.deliver(tw.segment(tw.peer_nxt, 0, flags=ACK, ack=tw.fast.snd_max))
    assert _fast_count(tw) == (fp0 + 2, ack0 + 1)
    assert tw.fast.snd_una == tw.fast.snd_max


UNPREDICTED: dict[str, Callable[[Twins], bytes]] = {
    "out of order": lambda tw: tw.segment(sq.add(tw.peer_nxt, 10), 100),
    "duplicate": lambda tw: tw.segment(sq.add(tw.peer_nxt, -MSS), MSS),
    "window changed": lambda tw: tw.segment(tw.peer_nxt, 100, window=tw.wnd_raw - 1),
    "FIN": lambda tw: tw.segment(tw.peer_nxt, 100, flags=ACK | FIN),
    "SYN": lambda tw: tw.segment(tw.peer_nxt, 0, flags=ACK | SYN),
    "RST": lambda tw: tw.segment(tw.peer_nxt, 0, flags=ACK | RST),
    "URG": lambda tw: tw.segment(tw.peer_nxt, 100, flags=ACK | 0x20),
    "ECE": lambda tw: tw.segment(tw.peer_nxt, 100, flags=ACK | 0x40),
    "no ACK": lambda tw: tw.segment(tw.peer_nxt, 100, flags=PSH),
    "PAWS": lambda tw: tw.segment(tw.peer_nxt, 100, ts=sq.add(tw.fast._ts_recent, -1)),
    "PAWS, half the TS space": lambda tw: tw.segment(tw.peer_nxt, 100,
                                                     ts=sq.add(tw.fast._ts_recent, sq.HALF)),
    "no timestamps": lambda tw: tw.segment(tw.peer_nxt, 100, opts=b""),
    "SACK beside TS": lambda tw: tw.segment(tw.peer_nxt, 100, opts=build_options(
        TcpOptions(ts_val=tw.peer_ts, sack=[(sq.add(tw.fast.snd_una, -9), tw.fast.snd_una)]))),
    "TS unaligned": lambda tw: tw.segment(tw.peer_nxt, 100, opts=build_options(
        TcpOptions(ts_val=tw.peer_ts))[2:] + b"\x01\x01"),
    "pure duplicate ACK": lambda tw: tw.segment(tw.peer_nxt, 0, flags=ACK),
    "ACK of unsent data": lambda tw: tw.segment(tw.peer_nxt, 100,
                                                ack=sq.add(tw.fast.snd_max, 1)),
    "ACK too old": lambda tw: tw.segment(tw.peer_nxt, 100, ack=sq.add(tw.fast.snd_una, -1)),
    "beyond the window": lambda tw: tw.segment(tw.peer_nxt, 4 * MSS),
}


@pytest.mark.parametrize("case", sorted(UNPREDICTED))
def test_unpredicted_segments_take_the_full_path(case: str) -> None:
    """Every segment that is not the predicted one goes the full way (and both paths
    still agree: Twins.deliver checks)."""
    tw = _established(rcvbuf=3 * MSS)
    tw.app_read(1 << 20)
    before = _fast_count(tw)
    tw.deliver(UNPREDICTED[case](tw))
    assert _fast_count(tw) == before


def test_timestamp_just_under_half_the_space_ahead_is_predicted() -> None:
    """PAWS's edge (RFC 7323 §5.3, serial arithmetic): TSval = TS.Recent + 2**31 - 1 is
    newer and predicted; + 2**31 is older (dropped, by the full path: see UNPREDICTED)."""
    tw = _established()
    before = _fast_count(tw)
    tw.deliver(tw.segment(tw.peer_nxt, 100, ts=sq.add(tw.fast._ts_recent, sq.HALF - 1)))
    assert _fast_count(tw)[0] == before[0] + 1


def test_data_behind_snd_wl1_is_not_predicted() -> None:
    """After a pure ACK from ahead of RCV.NXT (acceptable, it moved SND.WL1), in-order
    data at RCV.NXT is older than SND.WL1: no window update (RFC 9293 §3.10.7.4), so the
    full path; past SND.WL1 the fast path again."""
    tw = _established()
    tw.deliver(tw.segment(sq.add(tw.peer_nxt, 150), 0, flags=ACK))
    before = _fast_count(tw)
    for _ in range(2):  # at +0 and +100: behind SND.WL1 (+150)
        tw.deliver(tw.segment(tw.peer_nxt, 100))
        tw.peer_nxt = sq.add(tw.peer_nxt, 100)
    assert _fast_count(tw) == before
    tw.deliver(tw.segment(tw.peer_nxt, 100))
    assert _fast_count(tw)[0] == before[0] + 1


def test_not_predicted_outside_established_or_with_a_queue() -> None:
    """Out-of-order data queued, or a state other than ESTABLISHED: the full path."""
    tw = _established()
    tw.deliver(tw.segment(sq.add(tw.peer_nxt, MSS), MSS))  # queued out of order
    before = _fast_count(tw)
    tw.deliver(tw.segment(tw.peer_nxt, 100))  # in order, but the queue is not empty
    assert _fast_count(tw) == before
    tw2 = _established()
    for c in tw2.conns:
        c.close(tw2.now)
    tw2.check()  # our FIN went out: FIN-WAIT-1
    assert tw2.fast.state == TcpState.FIN_WAIT_1
    before = _fast_count(tw2)
    tw2.deliver(tw2.segment(tw2.peer_nxt, 100))
    assert _fast_count(tw2) == before


def _lossy_wire(hp: bool) -> list[bytes]:
    """Every segment of a lossy, reordering 1 MiB transfer through the simulator."""
    cfg = TcpConfig(header_prediction=hp)
    a = TcpLayer(A_IP, mss=1460, rng=random.Random(1))
    b = TcpLayer(B_IP, mss=1460, rng=random.Random(2))
    sim = SimNet([a, b], loss=0.02, reorder=0.05, dup=0.02, seed=7)
    lst = b.listen(PORT, config=cfg)
    ca = a.connect(B_IP, PORT, sim.now, config=cfg)
    sim.run_until(lambda: ca.connected and bool(lst.queue))
    cb = lst.accept()
    assert cb is not None
    data = random.Random(4).randbytes(1 << 20)
    assert transfer(sim, ca, cb, data) == data
    assert (b.counters.get("tcp", "fast_path") > 0) == hp
    return [g for _, _, g in sim.sent]


def test_sim_lossy_transfer_identical_with_and_without_prediction() -> None:
    """A lossy, reordering transfer through the simulator puts the same segments on the
    wire whether header prediction is on or off."""
    assert _lossy_wire(True) == _lossy_wire(False)
