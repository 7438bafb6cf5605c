"""StreamLink: passt / QEMU ``-netdev stream`` framing over a UNIX socketpair."""

from __future__ import annotations

import contextlib
import socket
import struct
from collections.abc import Iterator

import pytest

from netstack.link.base import Link, LinkError
from netstack.link.stream import StreamLink


def rec(frame: bytes) -> bytes:
    return struct.pack("!I", len(frame)) + frame


def frame(i: int, n: int = 60) -> bytes:
    return bytes([i & 0xFF]) * 6 + b"\x02" * 6 + b"\x08\x00" + bytes([i & 0xFF]) * (n - 14)


@pytest.fixture
def pair() -> Iterator[tuple[StreamLink, socket.socket]]:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    link = StreamLink(sock=a, mtu=1500, send_buffer=64 * 1024)
    yield link, b
    link.close()
    b.close()


def test_is_a_link(pair: tuple[StreamLink, socket.socket]) -> None:
    assert isinstance(pair[0], Link)


def test_frames_split_across_reads_and_many_per_read(
        pair: tuple[StreamLink, socket.socket]) -> None:
    link, peer = pair
    frames = [frame(i, 60 + i * 7) for i in range(20)]
    data = b"".join(rec(f) for f in frames)
    got: list[bytes] = []
    # byte by byte: every frame is split over many reads
    for i in range(0, 300):
        peer.send(data[i:i + 1])
        f = link.recv()
        if f is not None:
            got.append(f)
    peer.sendall(data[300:])
    while (f := link.recv()) is not None:
        got.append(f)
    assert got == frames
    assert link.counters()["rx_frames"] == 20
    assert link.next_deadline() is None


def test_buffered_frames_ask_for_a_poll(pair: tuple[StreamLink, socket.socket]) -> None:
    link, peer = pair
    peer.sendall(rec(frame(1)) + rec(frame(2)))
    assert link.recv() == frame(1)
    # the second frame is in our buffer, the fd is not readable: ask the loop to come back
    assert link.next_deadline() == 0.0
    assert link.recv() == frame(2)
    assert link.next_deadline() is None


def test_oversize_and_runt_records_are_skipped_in_step(
        pair: tuple[StreamLink, socket.socket]) -> None:
    link, peer = pair
    big = bytes(1500 + 18 + 1)
    peer.sendall(rec(big) + rec(b"short") + rec(frame(3)) + rec(bytes(1518)))
    assert link.recv() == frame(3)
    assert link.recv() == bytes(1518)  # MTU frame with an 802.1Q tag is fine
    c = link.counters()
    assert c["rx_drop_oversize"] == 1 and c["rx_drop_runt"] == 1


def test_huge_length_prefix_is_discarded_without_buffering(
        pair: tuple[StreamLink, socket.socket]) -> None:
    link, peer = pair
    n = 3 << 20  # "a 3 MiB frame": skipped as it streams in
    peer.sendall(struct.pack("!I", n))
    sent = 0
    chunk = bytes(64 * 1024)
    peer.setblocking(False)
    while sent < n:
        with contextlib.suppress(BlockingIOError):
            sent += peer.send(chunk[:min(len(chunk), n - sent)])
        assert link.recv() is None
        assert len(link._rx) <= 512 * 1024  # never more than a couple of reads held
    peer.setblocking(True)
    peer.sendall(rec(frame(4)))
    for _ in range(100):
        f = link.recv()
        if f is not None:
            break
    assert f == frame(4)
    assert link.counters()["rx_drop_oversize"] == 1


def test_send_records_and_backpressure(pair: tuple[StreamLink, socket.socket]) -> None:
    link, peer = pair
    link.send(frame(7))
    assert peer.recv(100) == rec(frame(7))
    # the peer stops reading: EAGAIN keeps bytes pending, then the bounded buffer drops
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sent = []
    for i in range(2000):
        f = frame(i, 1000)
        link.send(f)
        sent.append(f)
        if link.counters()["tx_drop_full"]:
            break
    c = link.counters()
    assert c["tx_drop_full"] == 1 and link.pending_bytes > 0
    assert link.next_deadline() is not None  # a poll is asked for to flush
    kept = sent[:-1]
    buf = bytearray()
    peer.setblocking(False)
    want = sum(4 + len(f) for f in kept)
    for _ in range(100000):
        link.poll(0.0)
        with contextlib.suppress(BlockingIOError):
            buf += peer.recv(1 << 16)
        if len(buf) >= want and link.pending_bytes == 0:
            break
    assert bytes(buf) == b"".join(rec(f) for f in kept)
    assert link.next_deadline() is None


def test_send_rejects_bad_sizes(pair: tuple[StreamLink, socket.socket]) -> None:
    link, _ = pair
    with pytest.raises(LinkError, match=r"outside 14\.\.1518"):
        link.send(bytes(1519))
    with pytest.raises(LinkError):
        link.send(b"tiny")


def test_peer_close_is_an_error(pair: tuple[StreamLink, socket.socket]) -> None:
    link, peer = pair
    peer.sendall(rec(frame(1))[:10])
    peer.close()
    with pytest.raises(LinkError, match=r"peer closed the stream .*partial frame"):
        link.recv()


def test_connect_errors_name_the_socket(tmp_path: object) -> None:
    with pytest.raises(LinkError, match=r"passt socket .*nope\.sock: cannot connect"):
        StreamLink(f"{tmp_path}/nope.sock", label="passt")


def test_connect_to_a_listening_socket(tmp_path: object) -> None:
    path = f"{tmp_path}/s.sock"
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(1)
    link = StreamLink(path, label="qemu")
    conn, _ = srv.accept()
    try:
        link.send(frame(9))
        assert conn.recv(100) == rec(frame(9))
        conn.sendall(rec(frame(10)))
        conn.settimeout(1)
        for _ in range(1000):
            f = link.recv()
            if f is not None:
                break
        assert f == frame(10)
    finally:
        link.close()
        conn.close()
        srv.close()
