"""Links: whole Ethernet frames in and out (see :mod:`netstack.link.base`).

Backends and wrappers:

* :class:`TapLink` (``netstack.link.tap``): a kernel TAP device;
* :class:`WirePair` / :func:`wire_pair` (``netstack.link.wire``): in-memory wire for tests;
* :class:`FaultLink` / :class:`FaultSpec` (``netstack.link.fault``): seeded faults;
* :class:`PcapLink` (``netstack.link.pcap``): classic pcap capture.
"""

from __future__ import annotations

from netstack.link.base import BytesLike, Link, LinkError
from netstack.link.fault import FaultLink, FaultSpec, FaultSpecError
from netstack.link.pcap import PcapLink, PcapWriter
from netstack.link.tap import TapLink
from netstack.link.wire import WireEnd, WirePair, wire_pair

__all__ = [
    "BytesLike", "FaultLink", "FaultSpec", "FaultSpecError", "Link", "LinkError",
    "PcapLink", "PcapWriter", "TapLink", "WireEnd", "WirePair", "wire_pair",
]
