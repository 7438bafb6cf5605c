"""FaultLink: seeded loss, duplication, reordering, delay, corruption in both directions."""

from __future__ import annotations

import pytest

from netstack.link import FaultLink, FaultSpec, FaultSpecError, Link, LinkError, WirePair


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def numbered(n: int, size: int = 64) -> list[bytes]:
    """Frames whose bytes 14..17 carry their index."""
    return [b"\x02" * 12 + b"\x08\x00" + i.to_bytes(4, "big") + b"\x00" * (size - 18)
            for i in range(n)]


def idx(frame: bytes) -> int:
    return int.from_bytes(frame[14:18], "big")


def drain(link: Link) -> list[bytes]:
    out = []
    while (f := link.recv()) is not None:
        out.append(f)
    return out


# --- spec ------------------------------------------------------------------------------


def test_spec_parse_and_str_round_trip() -> None:
    s = FaultSpec.parse("loss=0.05,reorder=0.02,dup=0.01,corrupt=0.001,delay_ms=5,seed=7")
    assert s == FaultSpec(loss=0.05, reorder=0.02, dup=0.01, corrupt=0.001, delay_ms=5.0,
                          seed=7)
    assert FaultSpec.parse(str(s)) == s
    assert FaultSpec.parse(" loss = 0.5 , dir=rx ,") == FaultSpec(loss=0.5, dir="rx")
    assert FaultSpec.parse("") == FaultSpec()
    assert not FaultSpec().active and s.active
    assert FaultSpec.parse("seed=0x10").seed == 16


@pytest.mark.parametrize(("spec", "message"), [
    ("los=0.1", "key 'los' is unknown"),
    ("loss=abc", "loss='abc': not a number"),
    ("loss=1.5", "loss=1.5: must be a probability"),
    ("dup=-0.1", "dup=-0.1: must be a probability"),
    ("loss", "item 'loss': expected key=value"),
    ("seed=1.5", "seed='1.5': not an integer"),
    ("delay_ms=-1", "delay_ms=-1.0: must be milliseconds"),
    ("delay_ms=inf", "delay_ms=inf: must be milliseconds"),
    ("dir=up", "dir='up': must be one of both, tx, rx"),
    ("loss=0.1,loss=0.2", "key 'loss' given twice"),
])
def test_spec_errors_name_key_and_value(spec: str, message: str) -> None:
    with pytest.raises(FaultSpecError, match=message.replace("(", r"\(").replace(")", r"\)")):
        FaultSpec.parse(spec)


def test_spec_error_is_a_link_error_and_value_error() -> None:
    with pytest.raises(LinkError):
        FaultSpec.parse("x=1")
    with pytest.raises(ValueError):
        FaultSpec(loss=2)


# --- behaviour -------------------------------------------------------------------------


def test_no_faults_is_transparent_and_is_a_link() -> None:
    with WirePair() as w:
        fl = FaultLink(w.a)
        assert isinstance(fl, Link)
        assert fl.mtu == 1500 and fl.fileno() == w.a.fileno()
        fs = numbered(20)
        for f in fs:
            fl.send(f)
            w.b.send(f)
        assert drain(w.b) == fs
        assert drain(fl) == fs
        c = fl.counters()
        assert c["fault.tx_frames"] == 20 and c["fault.rx_frames"] == 20
        assert c["tx_frames"] == 20  # inner counters included
        assert fl.next_deadline() is None


def test_loss_all_both_directions() -> None:
    with WirePair() as w:
        fl = FaultLink(w.a, loss=1.0)
        for f in numbered(10):
            fl.send(f)
            w.b.send(f)
        assert drain(w.b) == []
        assert drain(fl) == []
        c = fl.fault_counters()
        assert c["tx_lost"] == 10 and c["rx_lost"] == 10


def test_loss_rate_is_roughly_right_and_seeded() -> None:
    def run(seed: int) -> list[int]:
        with WirePair(capacity=10000) as w:
            fl = FaultLink(w.a, loss=0.2, seed=seed)
            for f in numbered(5000):
                fl.send(f)
            return [idx(f) for f in drain(w.b)]

    a, b, c = run(7), run(7), run(8)
    assert a == b          # same seed: same frames lost
    assert a != c          # other seed: other frames
    assert 0.17 * 5000 < 5000 - len(a) < 0.23 * 5000
    assert a == sorted(a)  # loss alone never reorders


def test_directions_have_independent_rngs() -> None:
    """The tx pattern does not depend on rx traffic interleaved with it."""
    def tx_survivors(with_rx: bool) -> list[int]:
        with WirePair(capacity=10000) as w:
            fl = FaultLink(w.a, loss=0.5, seed=3)
            for f in numbered(300):
                fl.send(f)
                if with_rx:
                    w.b.send(f)
                    drain(fl)
            return [idx(f) for f in drain(w.b)]

    assert tx_survivors(False) == tx_survivors(True)


def test_dup_all() -> None:
    with WirePair() as w:
        fl = FaultLink(w.a, dup=1.0)
        fs = numbered(5)
        for f in fs:
            fl.send(f)
        assert drain(w.b) == [f for f in fs for _ in (0, 1)]
        assert fl.fault_counters()["tx_duplicated"] == 5


def test_reorder_swaps_pairs() -> None:
    with WirePair() as w:
        fl = FaultLink(w.a, reorder=1.0)
        for f in numbered(6):
            fl.send(f)
        assert [idx(f) for f in drain(w.b)] == [1, 0, 3, 2, 5, 4]
        assert fl.fault_counters()["tx_reordered"] == 3


def test_reorder_rx_and_hold_timeout() -> None:
    clock = Clock()
    with WirePair() as w:
        fl = FaultLink(w.a, reorder=1.0, reorder_ms=20, clock=clock)
        for f in numbered(3):
            w.b.send(f)
        assert [idx(f) for f in drain(fl)] == [1, 0]  # frame 2 is held
        assert fl.next_deadline() == pytest.approx(0.020)
        clock.t = 0.019
        fl.poll(clock.t)
        assert drain(fl) == []
        clock.t = 0.020
        fl.poll(clock.t)
        assert [idx(f) for f in drain(fl)] == [2]
        assert fl.next_deadline() is None
        c = fl.fault_counters()
        assert c["rx_reordered"] == 1 and c["rx_reorder_timeout"] == 1


def test_delay_both_directions_until_deadline() -> None:
    clock = Clock()
    with WirePair() as w:
        fl = FaultLink(w.a, delay_ms=5, clock=clock)
        fs = numbered(3)
        fl.send(fs[0])
        w.b.send(fs[1])
        assert drain(fl) == []          # rx frame taken from the wire, held
        clock.t = 0.002
        fl.send(fs[2])
        assert drain(w.b) == []
        assert fl.next_deadline() == pytest.approx(0.005)
        fl.poll(0.0049)
        assert drain(w.b) == [] and drain(fl) == []
        fl.poll(0.005)
        assert drain(w.b) == [fs[0]]
        assert drain(fl) == [fs[1]]
        assert fl.pending_rx() == 0
        assert fl.next_deadline() == pytest.approx(0.007)
        fl.poll(0.1)
        assert drain(w.b) == [fs[2]]
        assert fl.next_deadline() is None
        c = fl.fault_counters()
        assert c["tx_delayed"] == 2 and c["rx_delayed"] == 1


def test_corrupt_flips_bits_past_the_ethernet_header() -> None:
    with WirePair() as w:
        fl = FaultLink(w.a, corrupt=1.0, seed=1)
        fs = numbered(50, size=200)
        for f in fs:
            fl.send(f)
        got = drain(w.b)
        assert len(got) == 50
        for f, g in zip(fs, got, strict=True):
            assert len(g) == len(f) and g[:14] == f[:14]
            flipped = sum(bin(x ^ y).count("1") for x, y in zip(f, g, strict=True))
            assert 1 <= flipped <= 3
        assert fl.fault_counters()["tx_corrupted"] == 50


def test_dir_tx_only() -> None:
    with WirePair() as w:
        fl = FaultLink(w.a, spec="loss=1,dir=tx")
        for f in numbered(4):
            fl.send(f)
            w.b.send(f)
        assert drain(w.b) == []
        assert len(drain(fl)) == 4


def test_mixed_faults_conserve_frames() -> None:
    """Every frame in is accounted for: delivered = in - lost + duplicated."""
    clock = Clock()
    with WirePair(capacity=100000) as w:
        spec = "loss=0.05,reorder=0.02,dup=0.01,corrupt=0.001,delay_ms=5,seed=7"
        fl = FaultLink(w.a, spec=spec, clock=clock)
        fs = numbered(20000)
        back: list[bytes] = []
        for i, f in enumerate(fs):
            clock.t = i * 0.0001
            fl.send(f)
            w.b.send(f)
            fl.poll(clock.t)
            back += drain(fl)
        for _ in range(2):  # a held frame times out, then goes through the delay
            clock.t += 1.0
            fl.poll(clock.t)
            back += drain(fl)
        out = drain(w.b)
        c = fl.fault_counters()
        for d, got in (("tx", out), ("rx", back)):
            assert c[f"{d}_frames"] == 20000
            assert len(got) == 20000 - c[f"{d}_lost"] + c[f"{d}_duplicated"]
            assert c[f"{d}_lost"] > 0 and c[f"{d}_duplicated"] > 0
            assert c[f"{d}_reordered"] > 0 and c[f"{d}_delayed"] == len(got)
            order = [idx(f) for f in got]
            assert order != sorted(order)  # something was reordered
        assert fl.next_deadline() is None


def test_send_checks_size_and_close_closes_inner() -> None:
    w = WirePair()
    fl = FaultLink(w.a, delay_ms=10)
    with pytest.raises(LinkError, match="frame of 2000 bytes"):
        fl.send(b"\x00" * 2000)
    fl.send(b"\x00" * 60)
    fl.close()
    with pytest.raises(LinkError):
        w.a.fileno()
    assert fl.next_deadline() is None
    w.close()


def test_unread_released_frames_make_the_link_due_at_once() -> None:
    clock = Clock()
    with WirePair() as w:
        fl = FaultLink(w.a, delay_ms=1, clock=clock)
        for f in numbered(3):
            w.b.send(f)
        assert fl.recv() is None
        fl.poll(0.001)
        assert fl.pending_rx() == 3
        assert fl.next_deadline() == 0.0  # a bounded reader stopped early: call again
        assert fl.recv() is not None
        assert fl.next_deadline() == 0.0
        drain(fl)
        assert fl.next_deadline() is None
