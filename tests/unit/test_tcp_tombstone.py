"""A connection that ends while its path is down is reset again when the path returns
(``TcpLayer.bury`` / ``path_confirmed``): the peer stops sending on it at once instead of
after its retransmission backoff (RFC 9293 §3.10.5, §3.10.7.1; RFC 5961 §3.2)."""

from __future__ import annotations

import random

from netstack.tcp.connection import TcpConnection, TcpState
from netstack.tcp.layer import TOMBSTONE_LIFE, TcpLayer
from netstack.tcp.segment import RST, parse
from tests.unit.tcp_sim import A_IP, B_IP, SimNet


class Path:
    """The wire's switch: down drops every segment (and counts the RSTs lost)."""

    def __init__(self) -> None:
        self.up = True
        self.lost_rsts = 0

    def __call__(self, src: bytes, dst: bytes, seg: bytes) -> bytes | None:
        if self.up:
            return seg
        if parse(memoryview(seg)).flags & RST:
            self.lost_rsts += 1
        return None


def setup() -> tuple[SimNet, Path, TcpLayer, TcpLayer, TcpConnection, TcpConnection]:
    path = Path()
    a = TcpLayer(A_IP, mss=1460, rng=random.Random(1))
    b = TcpLayer(B_IP, mss=1460, rng=random.Random(2))
    sim = SimNet([a, b], tap=path)
    lst = b.listen(3260)
    lst.backlog = 8
    ca = a.connect(B_IP, 3260, sim.now)
    sim.run_until(lambda: ca.connected and bool(lst.queue))
    cb = lst.accept()
    assert cb is not None
    return sim, path, a, b, ca, cb


def reconnect(sim: SimNet, a: TcpLayer, b: TcpLayer, port: int | None = None
              ) -> TcpConnection:
    lst = b._listeners[3260]
    c = a.connect(B_IP, 3260, sim.now, local_port=port)
    sim.run_until(lambda: c.connected and bool(lst.queue))
    got = lst.accept()
    assert got is not None
    return c


def test_an_abort_lost_on_a_dead_path_is_resent_when_a_new_handshake_completes() -> None:
    sim, path, a, b, ca, cb = setup()
    cb.send(b"x" * 5000)  # the peer has data in flight when the path goes
    path.up = False
    sim.flush()
    ca.abort(sim.now)
    sim.flush()
    assert path.lost_rsts == 1 and cb.state is TcpState.ESTABLISHED
    assert a.counters.layer("tcp")["tombstones"] == 1
    sim.now += 30.0  # the peer retransmits into the void meanwhile
    path.up = True
    reconnect(sim, a, b)
    sim.run_until(lambda: cb.state is TcpState.CLOSED, limit=1.0)
    assert cb.error is not None and cb.error.reason == "reset"
    assert a.counters.layer("tcp")["tombstone_resets"] == 1
    assert not a._tombstones


def test_a_timed_out_connection_is_reset_when_the_path_returns() -> None:
    sim, path, a, b, ca, cb = setup()
    ca.config.user_timeout = 5.0
    path.up = False
    ca.send(b"y" * 3000)
    sim.run_until(lambda: ca.state is TcpState.CLOSED, limit=60.0)
    assert ca.error is not None and ca.error.reason == "timeout"
    assert cb.state is TcpState.ESTABLISHED and path.lost_rsts == 0
    path.up = True
    reconnect(sim, a, b)
    # our SND.NXT is past the peer's RCV.NXT (the data never arrived): the RST is in the
    # window but not exact, so the peer sends a challenge ACK (RFC 5961 §3.2); the ACK
    # for a connection we no longer know gets the RST with its own number
    sim.run_until(lambda: cb.state is TcpState.CLOSED, limit=1.0)
    assert cb.error is not None and cb.error.reason == "reset"
    assert b.counters.layer("tcp")["challenge_acks"] >= 1


def test_a_new_connection_on_the_same_four_tuple_is_never_reset() -> None:
    sim, path, a, b, ca, cb = setup()
    port = ca.local_port
    path.up = False
    ca.abort(sim.now)
    sim.flush()
    path.up = True
    sim.now += 1.0
    cb.abort(sim.now)  # the peer gives up too; the 4-tuple is free on both sides
    sim.flush()
    c2 = reconnect(sim, a, b, port=port)
    for _ in range(50):
        sim.step()
    assert c2.connected and a.counters.layer("tcp")["tombstone_resets"] == 0
    assert not a._tombstones


def test_buried_connections_expire() -> None:
    sim, path, a, b, ca, cb = setup()
    path.up = False
    ca.abort(sim.now)
    sim.flush()
    path.up = True
    sim.now += TOMBSTONE_LIFE + 1
    cb.abort(sim.now)  # (the peer gave up long ago)
    reconnect(sim, a, b)
    assert a.counters.layer("tcp")["tombstone_resets"] == 0 and not a._tombstones


def test_a_clean_close_or_a_reset_buries_nothing() -> None:
    sim, _path, a, _b, ca, cb = setup()
    ca.close(sim.now)
    cb.close(sim.now)
    sim.run_until(lambda: cb.state is TcpState.CLOSED, limit=5.0)
    sim2, _path2, a2, _b2, ca2, cb2 = setup()
    cb2.abort(sim2.now)
    sim2.run_until(lambda: ca2.state is TcpState.CLOSED, limit=1.0)
    assert a.counters.layer("tcp")["tombstones"] == 0
    assert a2.counters.layer("tcp")["tombstones"] == 0
