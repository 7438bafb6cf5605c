"""Text Request/Response exchanges and SendTargets discovery (RFC 7143 §11.10,
§11.11, §13.3, §13.8, Appendix C).

* :func:`parse_portal` parses a TargetAddress value ``host[:port][,tpgt]`` with
  IPv4, bracketed IPv6 (``[fe80::1]:3260,1``) or DNS names (§13.8).
* :func:`parse_send_targets` turns the pairs of a SendTargets response into
  :class:`DiscoveredTarget` objects, each with its portals (Appendix C).
* :class:`TextExchange` drives one text negotiation in the full feature phase,
  including continuation both ways: a response with C=1 (or F=0) is answered
  with an empty Text Request carrying the target's TTT (§11.10.4, §11.11.4).

Sans-IO: requests are returned with ``cmdsn``/``exp_statsn`` set to 0; the
session stamps its sequence numbers on each before encoding.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass

from bootinit.iscsi.errors import KeyFormatError, ProtocolError
from bootinit.iscsi.keys import Pairs, TextAssembler, encode_text, split_text
from bootinit.iscsi.pdu import RESERVED_TAG, TextRequest, TextResponse

DEFAULT_PORT = 3260
_DNS_RE = re.compile(r"(?=.{1,253}\Z)[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?"
                     r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?)*\.?\Z")


@dataclass(frozen=True, slots=True)
class Portal:
    """A network portal: host (IP literal or DNS name), TCP port, portal group tag."""

    host: str
    port: int = DEFAULT_PORT
    tpgt: int | None = None

    @property
    def is_ipv6(self) -> bool:
        """True for an IPv6 literal host."""
        return ":" in self.host

    def __str__(self) -> str:
        host = f"[{self.host}]" if self.is_ipv6 else self.host
        tag = "" if self.tpgt is None else f",{self.tpgt}"
        return f"{host}:{self.port}{tag}"


def parse_portal(value: str, default_port: int = DEFAULT_PORT) -> Portal:
    """Parse ``domainname[:port][,portal-group-tag]`` (RFC 7143 §13.8).

    ``domainname`` is a DNS name, dotted IPv4 or an IPv6 literal in brackets.
    Raises :class:`KeyFormatError` naming the value on anything else.
    """
    text = value.strip()
    tpgt: int | None = None
    head = text
    if "," in text:
        head, _, tag = text.rpartition(",")
        if not (tag.isascii() and tag.isdigit()) or int(tag) > 65535:
            raise KeyFormatError("TargetAddress", value, "portal group tag must be 0..65535")
        tpgt = int(tag)
    port = default_port
    if head.startswith("["):
        close = head.find("]")
        if close < 0:
            raise KeyFormatError("TargetAddress", value, "missing ']' after IPv6 address")
        host = head[1:close]
        rest = head[close + 1:]
        try:
            ipaddress.IPv6Address(host.split("%", 1)[0])
        except ValueError:
            raise KeyFormatError("TargetAddress", value, "invalid IPv6 address") from None
        if rest:
            if not rest.startswith(":"):
                raise KeyFormatError("TargetAddress", value, "garbage after ']'")
            port = _port(value, rest[1:])
    else:
        if head.count(":") > 1:
            raise KeyFormatError("TargetAddress", value, "IPv6 address must be in brackets")
        host, sep, port_text = head.partition(":")
        if sep:
            port = _port(value, port_text)
        if not host:
            raise KeyFormatError("TargetAddress", value, "empty host")
        if host.replace(".", "").isdigit():
            try:
                ipaddress.IPv4Address(host)
            except ValueError:
                raise KeyFormatError("TargetAddress", value, "invalid IPv4 address") from None
        elif not _DNS_RE.match(host):
            raise KeyFormatError("TargetAddress", value, "invalid host name")
    return Portal(host, port, tpgt)


def _port(value: str, text: str) -> int:
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= 65535:
        raise KeyFormatError("TargetAddress", value, "port must be 1..65535")
    return int(text)


@dataclass(frozen=True, slots=True)
class DiscoveredTarget:
    """One target of a SendTargets answer with all its portals (Appendix C)."""

    name: str
    portals: tuple[Portal, ...]


def parse_send_targets(pairs: Iterable[tuple[str, str]]) -> list[DiscoveredTarget]:
    """Group ``TargetName``/``TargetAddress`` pairs into targets (RFC 7143 Appendix C).

    Each TargetAddress belongs to the TargetName before it; a TargetAddress
    before any TargetName is an error.  Other keys are ignored.  A target
    listed without addresses has no portals (it is reached on the portal used
    for discovery, Appendix C).
    """
    targets: list[tuple[str, list[Portal]]] = []
    for key, value in pairs:
        if key == "TargetName":
            if not value:
                raise KeyFormatError(key, value, "empty target name")
            targets.append((value, []))
        elif key == "TargetAddress":
            if not targets:
                raise KeyFormatError(key, value, "TargetAddress before any TargetName")
            targets[-1][1].append(parse_portal(value))
    return [DiscoveredTarget(name, tuple(portals)) for name, portals in targets]


class TextExchange:
    """One Text Request/Response exchange with continuation (RFC 7143 §11.10/§11.11).

    ``first_requests()`` gives the request(s) for our text (several, chained with
    C=1, when it exceeds ``max_data``: the target's MaxRecvDataSegmentLength);
    ``receive(resp)`` returns the next request to send, or the complete pairs.
    """

    def __init__(
        self, pairs: Pairs, *, itt: int, lun: int = 0, max_data: int = 8192,
        text_limit: int = 1 << 20, max_exchanges: int = 1024,
    ) -> None:
        self.itt = itt
        self.lun = lun
        self._chunks = split_text(encode_text(pairs), max_data)
        self._next_chunk = 0
        self._assembler = TextAssembler(text_limit)
        self._exchanges = 0
        self._max_exchanges = max_exchanges
        self.done = False

    def _request(self, data: bytes, *, final: bool, cont: bool, ttt: int) -> TextRequest:
        return TextRequest(final=final, cont=cont, lun=self.lun, itt=self.itt, ttt=ttt,
                           data=data)

    def first_request(self) -> TextRequest:
        """The first Text Request (C=1 when more of our text follows)."""
        chunk = self._chunks[0]
        self._next_chunk = 1
        more = len(self._chunks) > 1
        return self._request(chunk, final=not more, cont=more, ttt=RESERVED_TAG)

    def receive(self, resp: TextResponse) -> TextRequest | Pairs:
        """Handle a Text Response: next request to send, or the complete answer."""
        if self.done:
            raise ProtocolError("Text Response after the exchange ended")
        if resp.itt != self.itt:
            raise ProtocolError(f"Text Response ITT 0x{resp.itt:08x}, expected 0x{self.itt:08x}")
        self._exchanges += 1
        if self._exchanges > self._max_exchanges:
            raise ProtocolError(f"text exchange exceeds {self._max_exchanges} PDUs")
        if self._next_chunk < len(self._chunks):
            # We are still sending: the target acknowledges with an empty response.
            if resp.data_length:
                raise ProtocolError("target answered before our continued text was complete")
            chunk = self._chunks[self._next_chunk]
            self._next_chunk += 1
            more = self._next_chunk < len(self._chunks)
            return self._request(chunk, final=not more, cont=more, ttt=resp.ttt)
        pairs = self._assembler.add(resp.data, resp.cont)
        if pairs is None or not resp.final:
            if pairs is not None:
                # F=0 without C: more answers follow in later PDUs; keep them.
                self._assembler.add(encode_text(pairs), True)
            if resp.ttt == RESERVED_TAG:
                raise ProtocolError("Text Response with more to come carries no TTT (§11.11.4)")
            return self._request(b"", final=True, cont=False, ttt=resp.ttt)
        self.done = True
        return pairs


class SendTargets(TextExchange):
    """SendTargets discovery (RFC 7143 §13.3): ``SendTargets=All`` or one target name."""

    def __init__(self, *, itt: int, value: str = "All", max_data: int = 8192,
                 text_limit: int = 1 << 20) -> None:
        super().__init__([("SendTargets", value)], itt=itt, max_data=max_data,
                         text_limit=text_limit)

    def receive_targets(self, resp: TextResponse) -> TextRequest | list[DiscoveredTarget]:
        """Like :meth:`receive`, parsing the final answer into targets."""
        out = self.receive(resp)
        if isinstance(out, TextRequest):
            return out
        return parse_send_targets(out)


__all__ = [
    "DEFAULT_PORT", "DiscoveredTarget", "Portal", "SendTargets", "TextExchange",
    "parse_portal", "parse_send_targets",
]
