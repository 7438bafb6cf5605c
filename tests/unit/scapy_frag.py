"""scapy's IPv4 and IPv6 fragmentation helpers, typed.

scapy leaves :func:`~scapy.layers.inet.fragment`, :func:`~scapy.layers.inet.defragment`,
:func:`~scapy.layers.inet6.fragment6` and :func:`~scapy.layers.inet6.defragment6`
unannotated, which ``mypy --strict`` rejects in typed code (no-untyped-call); these
wrappers call them unchanged with the types their code has (scapy 2.5+)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import cast

from scapy.layers.inet import defragment as _defragment
from scapy.layers.inet import fragment as _fragment
from scapy.layers.inet6 import defragment6 as _defragment6
from scapy.layers.inet6 import fragment6 as _fragment6
from scapy.packet import Packet
from scapy.plist import PacketList

_fragment_t = cast(Callable[[Packet, int], list[Packet]], _fragment)
_defragment_t = cast(Callable[[Iterable[Packet]], PacketList], _defragment)
_fragment6_t = cast(Callable[[Packet, int], list[Packet]], _fragment6)
_defragment6_t = cast(Callable[[Iterable[Packet]], "Packet | list[Packet]"], _defragment6)


def fragment(pkt: Packet, fragsize: int = 1480) -> list[Packet]:
    """The IPv4 fragments of ``pkt`` (payloads of at most ``fragsize`` bytes)."""
    return _fragment_t(pkt, fragsize)


def defragment(plist: Iterable[Packet]) -> PacketList:
    """The datagrams of ``plist``, fragments reassembled."""
    return _defragment_t(plist)


def fragment6(pkt: Packet, frag_size: int) -> list[Packet]:
    """The IPv6 fragments of ``pkt`` (a packet with an IPv6ExtHdrFragment), each at most
    ``frag_size`` bytes."""
    return _fragment6_t(pkt, frag_size)


def defragment6(packets: Iterable[Packet]) -> Packet:
    """The IPv6 packet reassembled from the fragments ``packets``."""
    whole = _defragment6_t(packets)
    assert isinstance(whole, Packet), "no IPv6 fragment to reassemble"
    return whole
