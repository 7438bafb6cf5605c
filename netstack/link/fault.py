"""Seeded fault injection on any :class:`~netstack.link.base.Link`, in both directions.

Each frame passing through a direction (``tx``: our ``send``; ``rx``: frames read from
the inner link) goes through these stages, each drawing from that direction's own
seeded :class:`random.Random` (so the fault pattern of one direction does not depend on
how traffic interleaves with the other):

1. **loss** — dropped with probability ``loss``;
2. **corrupt** — with probability ``corrupt``, 1 to 3 random bits are flipped, beyond the
   14-byte Ethernet header (a corrupted header would act as loss: a real NIC's FCS
   check drops it; corruption past it is what IP/TCP/iSCSI checksums must catch);
3. **dup** — with probability ``dup`` the frame is sent twice;
4. **reorder** — with probability ``reorder`` the frame is held and released right
   after the next frame of the same direction (or, if none comes, after
   ``reorder_ms``);
5. **delay** — with ``delay_ms > 0`` every frame is held until ``now + delay_ms``;
   the loop calls ``poll(now)`` at ``next_deadline()``: delayed outgoing frames are
   then written to the inner link, delayed incoming ones returned by ``recv()``.

Time comes from ``clock`` (monotonic seconds) when frames enter, and from ``poll(now)``.

Spec strings (``--fault``): ``loss=0.05,reorder=0.02,dup=0.01,corrupt=0.001,delay_ms=5,
seed=7``; also ``reorder_ms=50`` and ``dir=both|tx|rx`` (which directions are faulted).
"""

from __future__ import annotations

import dataclasses
import math
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from netstack.link.base import BytesLike, Link, LinkError

ETH_HLEN = 14
_PROBS = ("loss", "dup", "reorder", "corrupt")
_DIRS = ("both", "tx", "rx")


class FaultSpecError(LinkError, ValueError):
    """A fault spec has an unknown key or a bad value; the message names both."""


@dataclass(frozen=True)
class FaultSpec:
    """What to inject. Probabilities are per frame, in [0, 1]."""

    loss: float = 0.0
    dup: float = 0.0
    reorder: float = 0.0
    corrupt: float = 0.0
    delay_ms: float = 0.0
    reorder_ms: float = 50.0
    seed: int = 0
    dir: str = "both"

    def __post_init__(self) -> None:
        for key in _PROBS:
            v = getattr(self, key)
            if not isinstance(v, int | float) or isinstance(v, bool) or not 0.0 <= v <= 1.0:
                raise FaultSpecError(f"fault {key}={v!r}: must be a probability in 0..1")
        for key in ("delay_ms", "reorder_ms"):
            v = getattr(self, key)
            if (not isinstance(v, int | float) or isinstance(v, bool) or not math.isfinite(v)
                    or not 0.0 <= v <= 60_000.0):
                raise FaultSpecError(f"fault {key}={v!r}: must be milliseconds in 0..60000")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise FaultSpecError(f"fault seed={self.seed!r}: must be an integer")
        if self.dir not in _DIRS:
            raise FaultSpecError(f"fault dir={self.dir!r}: must be one of {', '.join(_DIRS)}")

    @classmethod
    def parse(cls, spec: str) -> FaultSpec:
        """Parse ``key=value,key=value``; an empty string means no faults."""
        kwargs: dict[str, float | int | str] = {}
        names = {f.name: f.type for f in dataclasses.fields(cls)}
        for raw in spec.split(","):
            item = raw.strip()
            if not item:
                continue
            key, sep, value = item.partition("=")
            key, value = key.strip(), value.strip()
            if not sep:
                raise FaultSpecError(f"fault spec item {item!r}: expected key=value")
            if key not in names:
                raise FaultSpecError(f"fault spec key {key!r} is unknown (known: "
                                     f"{', '.join(names)})")
            if key in kwargs:
                raise FaultSpecError(f"fault spec key {key!r} given twice")
            if key == "dir":
                kwargs[key] = value
                continue
            try:
                num: float | int = int(value, 0) if key == "seed" else float(value)
            except ValueError:
                kind = "an integer" if key == "seed" else "a number"
                raise FaultSpecError(f"fault {key}={value!r}: not {kind}") from None
            kwargs[key] = num
        return cls(**kwargs)  # type: ignore[arg-type]

    def __str__(self) -> str:
        """The spec string (only the keys that differ from the defaults)."""
        default = FaultSpec()
        parts = [f"{f.name}={getattr(self, f.name)}" for f in dataclasses.fields(self)
                 if getattr(self, f.name) != getattr(default, f.name)]
        return ",".join(parts)

    @property
    def active(self) -> bool:
        """Whether any fault is configured."""
        return any(getattr(self, k) > 0 for k in (*_PROBS, "delay_ms"))


class _Path:
    """One direction's fault pipeline, delivering surviving frames to ``out``."""

    __slots__ = ("_held", "_held_until", "c", "delay", "delayq", "enabled", "name", "out",
                 "rng", "spec")

    def __init__(self, name: str, spec: FaultSpec, out: Callable[[bytes], None],
                 enabled: bool, counters: dict[str, int]) -> None:
        self.name = name
        self.spec = spec
        self.out = out
        self.enabled = enabled
        self.rng = random.Random(f"{spec.seed}:{name}")
        self.delay = spec.delay_ms / 1000.0
        self.delayq: deque[tuple[float, bytes]] = deque()
        self._held: bytes | None = None
        self._held_until = 0.0
        self.c = counters
        for k in ("frames", "lost", "corrupted", "duplicated", "reordered",
                  "reorder_timeout", "delayed"):
            counters[f"{name}_{k}"] = 0

    def push(self, frame: bytes, now: float) -> None:
        """Apply the faults to one frame entering this direction."""
        c, n, spec, rng = self.c, self.name, self.spec, self.rng
        c[f"{n}_frames"] += 1
        if not self.enabled:
            self.out(frame)
            return
        if spec.loss and rng.random() < spec.loss:
            c[f"{n}_lost"] += 1
            return
        if spec.corrupt and rng.random() < spec.corrupt:
            frame = self._corrupt(frame)
            c[f"{n}_corrupted"] += 1
        self._reorder(frame, now)
        if spec.dup and rng.random() < spec.dup:
            c[f"{n}_duplicated"] += 1
            self._reorder(frame, now)

    def _corrupt(self, frame: bytes) -> bytes:
        buf = bytearray(frame)
        lo = ETH_HLEN if len(buf) > ETH_HLEN else 0
        for _ in range(self.rng.randint(1, 3)):
            bit = self.rng.randrange(lo * 8, len(buf) * 8)
            buf[bit >> 3] ^= 1 << (bit & 7)
        return bytes(buf)

    def _reorder(self, frame: bytes, now: float) -> None:
        held = self._held
        if held is not None:
            self._held = None
            self.c[f"{self.name}_reordered"] += 1
            self._delay(frame, now)
            self._delay(held, now)
        elif self.spec.reorder and self.rng.random() < self.spec.reorder:
            self._held = frame
            self._held_until = now + self.spec.reorder_ms / 1000.0
        else:
            self._delay(frame, now)

    def _delay(self, frame: bytes, now: float) -> None:
        if self.delay > 0.0:
            self.c[f"{self.name}_delayed"] += 1
            self.delayq.append((now + self.delay, frame))
        else:
            self.out(frame)

    def poll(self, now: float) -> None:
        """Release a held frame whose hold expired and delayed frames that are due."""
        if self._held is not None and self._held_until <= now:
            held, self._held = self._held, None
            self.c[f"{self.name}_reorder_timeout"] += 1
            self._delay(held, now)
        q = self.delayq
        while q and q[0][0] <= now:
            self.out(q.popleft()[1])

    def next_deadline(self) -> float | None:
        """Earliest time at which :meth:`poll` has something to release."""
        d = self.delayq[0][0] if self.delayq else None
        if self._held is not None and (d is None or self._held_until < d):
            d = self._held_until
        return d

    def clear(self) -> None:
        """Forget everything in flight."""
        self.delayq.clear()
        self._held = None


class FaultLink:
    """A Link that injects seeded faults into the frames of an inner Link.

    Keyword arguments are those of :class:`FaultSpec`; ``spec=`` gives them all at once.
    ``clock`` is the monotonic time source used when frames enter.
    """

    def __init__(self, inner: Link, *, loss: float = 0.0, dup: float = 0.0,
                 reorder: float = 0.0, delay_ms: float = 0.0, corrupt: float = 0.0,
                 seed: int = 0, reorder_ms: float = 50.0, dir: str = "both",
                 spec: FaultSpec | str | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if spec is None:
            spec = FaultSpec(loss=loss, dup=dup, reorder=reorder, corrupt=corrupt,
                             delay_ms=delay_ms, reorder_ms=reorder_ms, seed=seed, dir=dir)
        elif isinstance(spec, str):
            spec = FaultSpec.parse(spec)
        self.inner = inner
        self.mtu = inner.mtu
        self.spec = spec
        self._clock = clock
        self._rx_ready: deque[bytes] = deque()
        self._c: dict[str, int] = {}
        self._tx = _Path("tx", spec, self._inner_send, spec.dir in ("both", "tx"), self._c)
        self._rx = _Path("rx", spec, self._rx_ready.append, spec.dir in ("both", "rx"),
                         self._c)
        self._frame_max = self.mtu + ETH_HLEN

    def _inner_send(self, frame: bytes) -> None:
        self.inner.send(frame)

    def fileno(self) -> int:
        """The inner link's descriptor."""
        return self.inner.fileno()

    def send(self, frame: BytesLike) -> None:
        """Pass ``frame`` through the tx faults toward the inner link."""
        n = len(frame)
        if not ETH_HLEN <= n <= self._frame_max:
            raise LinkError(f"fault link: frame of {n} bytes outside "
                            f"{ETH_HLEN}..{self._frame_max} (MTU {self.mtu})")
        self._tx.push(bytes(frame), self._clock())

    def recv(self) -> bytes | None:
        """Next frame that survived the rx faults and is due, or None."""
        ready = self._rx_ready
        while not ready:
            frame = self.inner.recv()
            if frame is None:
                return None
            self._rx.push(frame, self._clock())
        return ready.popleft()

    def next_deadline(self) -> float | None:
        """Earliest of the inner link's, the delay queues' and the reorder holds'.

        While released frames wait for ``recv()`` it is 0.0 (due at once): those frames
        do not make the descriptor readable, so a reader that stopped early (a bounded
        batch) is called again through the loop's deadline path.
        """
        if self._rx_ready:
            return 0.0
        ds = [d for d in (self.inner.next_deadline(), self._tx.next_deadline(),
                          self._rx.next_deadline()) if d is not None]
        return min(ds) if ds else None

    def poll(self, now: float) -> None:
        """Release due frames (then call ``recv()``: released rx frames are queued)."""
        self.inner.poll(now)
        self._tx.poll(now)
        self._rx.poll(now)

    def pending_rx(self) -> int:
        """Frames released and waiting for ``recv()`` (not signalled by the fd)."""
        return len(self._rx_ready)

    def fault_counters(self) -> dict[str, int]:
        """Only this wrapper's counters: ``{tx,rx}_{frames,lost,corrupted,...}``."""
        return dict(self._c)

    def counters(self) -> dict[str, int]:
        """The inner link's counters plus this wrapper's, prefixed ``fault.``."""
        out = self.inner.counters()
        out.update({f"fault.{k}": v for k, v in self._c.items()})
        return out

    def close(self) -> None:
        """Drop frames in flight and close the inner link (idempotent)."""
        self._tx.clear()
        self._rx.clear()
        self._rx_ready.clear()
        self.inner.close()

    def __repr__(self) -> str:
        return f"FaultLink({self.inner!r}, {self.spec})"
