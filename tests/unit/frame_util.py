"""What an :class:`~netstack.interface.Interface` without TSO sends, typed as such."""

from __future__ import annotations

from netstack.interface import Interface


def plain_frames(iface: Interface, now: float) -> list[bytes]:
    """``iface.frames_to_send(now)``, each a plain frame: there is no
    :class:`~netstack.link.base.GsoFrame` without a transport making TSO super-segments."""
    frames = iface.frames_to_send(now)
    plain = [f for f in frames if isinstance(f, bytes)]
    assert len(plain) == len(frames), frames
    return plain
