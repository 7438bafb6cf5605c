"""A deterministic network between pure TCP layers, with a fake clock and seeded faults."""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable

from netstack.tcp.layer import TcpLayer
from netstack.tcp.segment import SegmentRun, TsoSegment, split

A_IP = bytes([10, 0, 0, 1])
B_IP = bytes([10, 0, 0, 2])


class SimNet:
    """Carries segments between layers; ``latency`` one way; seeded loss/dup/reorder.

    A layer with TSO (``tso_max``) may output :class:`TsoSegment` s: they are recorded in
    ``super_segments`` and cut into wire segments here, as the kernel would."""

    def __init__(self, layers: list[TcpLayer], latency: float = 0.0005, loss: float = 0.0,
                 dup: float = 0.0, reorder: float = 0.0, seed: int = 1,
                 tap: Callable[[bytes, bytes, bytes], bytes | None] | None = None) -> None:
        self.layers = {ly.local_ip: ly for ly in layers}
        self.now = 100.0
        self.latency = latency
        self.loss, self.dup, self.reorder = loss, dup, reorder
        self.rng = random.Random(seed)
        self.queue: list[tuple[float, int, bytes, bytes, bytes]] = []
        self.seq = 0
        self.sent: list[tuple[bytes, bytes, bytes]] = []  # (src, dst, segment)
        self.super_segments: list[tuple[bytes, bytes, TsoSegment]] = []
        self.tap = tap
        self.dropped = 0

    def flush(self) -> None:
        """Collect the output of every layer and put it on the wire."""
        for src, ly in self.layers.items():
            wire: list[tuple[bytes, bytes]] = []
            for dst, out in ly.output(self.now):
                if isinstance(out, TsoSegment):
                    self.super_segments.append((src, dst, out))
                    wire += [(dst, s) for s in split(out.data, src, dst, out.gso_size)]
                elif isinstance(out, SegmentRun):  # only with tx_runs, which the sim leaves off
                    wire += [(dst, s) for s in out.segments()]
                else:
                    wire.append((dst, out))
            for dst, seg in wire:
                self.sent.append((src, dst, seg))
                if self.tap is not None:
                    maybe = self.tap(src, dst, seg)
                    if maybe is None:
                        continue
                    seg = maybe
                if self.rng.random() < self.loss:
                    self.dropped += 1
                    continue
                copies = 2 if self.rng.random() < self.dup else 1
                for _ in range(copies):
                    delay = self.latency
                    if self.rng.random() < self.reorder:
                        delay += self.latency * 3
                    self.seq += 1
                    heapq.heappush(self.queue, (self.now + delay, self.seq, src, dst, seg))

    def step(self) -> bool:
        """Advance to the next event (delivery or timer). False when nothing is left."""
        self.flush()
        t_net = self.queue[0][0] if self.queue else None
        t_tmr = None
        for ly in self.layers.values():
            d = ly.next_deadline()
            if d is not None and (t_tmr is None or d < t_tmr):
                t_tmr = d
        cands = [t for t in (t_net, t_tmr) if t is not None]
        if not cands:
            return False
        t = min(cands)
        self.now = max(self.now, t)
        # deliver every frame due now as one batch per layer
        while self.queue and self.queue[0][0] <= self.now:
            _, _, src, dst, seg = heapq.heappop(self.queue)
            receiver = self.layers.get(dst)
            if receiver is not None:
                receiver.receive(src, dst, memoryview(seg), self.now)
        for ly in self.layers.values():
            d = ly.next_deadline()
            if d is not None and d <= self.now:
                ly.on_deadline(self.now)
        for ly in self.layers.values():
            for conn in ly.take_notified():
                if conn.callback is not None:
                    conn.callback(conn)
        return True

    def run_until(self, pred: Callable[[], bool], limit: float = 600.0) -> None:
        """Step until ``pred()``; fail after ``limit`` simulated seconds or when idle."""
        end = self.now + limit
        steps = 0
        while not pred():
            steps += 1
            if steps > 2_000_000:
                raise AssertionError(f"no progress after {steps} steps at t={self.now}")
            if self.now > end:
                raise AssertionError(f"simulated deadline passed at t={self.now}")
            if not self.step():
                raise AssertionError("network idle before the condition held")
