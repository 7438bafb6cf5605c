"""The stack glue's receive batch (netstack/stack.py): how much one wake-up reads before
its output (one ACK for the batch) is flushed."""

from __future__ import annotations

import ipaddress

from netstack.link import WirePair
from netstack.loop import Loop
from netstack.stack import MAX_BATCH, MAX_BATCH_BYTES, NetStack, StackConfig
from netstack.tcp.connection import TcpConfig

MAC = b"\x02\x00\x00\x00\x00\x02"


def _frames_in(stack: NetStack) -> int:
    return stack.counters_dict()["eth"]["frames_in"]


def _run(rcvbuf: int | None, mtu: int, frames: int) -> tuple[NetStack, list[int]]:
    """Queue ``frames`` full-size frames for the stack, then count how many each call of
    the reader takes (what one loop wake-up handles)."""
    with Loop() as loop, WirePair(mtu=mtu) as w:
        tcp = None if rcvbuf is None else TcpConfig(rcvbuf=rcvbuf)
        stack = NetStack(loop, w.a, StackConfig(mac=MAC, ip=ipaddress.IPv4Interface(
            "10.0.0.2/24"), tcp=tcp))
        stack.start()
        frame = MAC + b"\x02\x00\x00\x00\x00\x01" + b"\x88\xb5" + bytes(mtu)
        for _ in range(frames):
            w.b.send(frame)
        per_call: list[int] = []
        while True:
            before = _frames_in(stack)
            stack._on_readable()
            got = _frames_in(stack) - before
            if not got:
                return stack, per_call
            per_call.append(got)


def test_batch_is_bounded_by_half_the_receive_window() -> None:
    # 16 KiB window: at most 8 KiB per batch, i.e. 6 frames of 1514 bytes (the budget
    # is checked after each frame).
    stack, per_call = _run(16 * 1024, 1500, 20)
    assert stack._batch_bytes == 8 * 1024
    assert per_call == [6, 6, 6, 2]


def test_batch_default_budget_and_frame_limit() -> None:
    stack, per_call = _run(None, 1500, MAX_BATCH + 10)
    assert stack._batch_bytes == min(MAX_BATCH_BYTES, TcpConfig().rcvbuf // 2)
    assert per_call == [MAX_BATCH, 10]  # 64 small frames are far below the byte budget
    stack, per_call = _run(None, 65520, 40)  # 64 KiB frames: the byte budget stops first
    per = -(-MAX_BATCH_BYTES // (65520 + 14))
    assert per_call[0] == per and sum(per_call) == 40
