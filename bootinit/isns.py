"""iSNS (RFC 4171): a pure iSNSP codec, a sans-IO discovery client, and a blocking helper.

The Internet Storage Name Service answers "which targets may this initiator see" from
its database of registered entities (network entity -> portals, storage nodes, portal
groups) scoped by discovery domains.  This module is what a boot initiator needs:

* the iSNSP PDU header (§5.1: version, Function ID, PDU length, flags, transaction and
  sequence IDs) and the tag-length-value attributes (§5.5, §6), with messages split
  over several PDUs (first/last flags, §5.1.3) reassembled;
* :class:`IsnsClient`, sans-IO: ``register()`` (DevAttrReg of our initiator node,
  §5.6.5.1, as open-iscsi does; servers may refuse queries from an unknown source),
  ``query_targets()`` (DevAttrQry with key "iSCSI Node Type = Target" and the
  node, portal and portal group attributes asked for, §5.6.5.2), ``deregister()``
  (DevDereg, §5.6.5.4); ``feed(bytes)`` returns complete :class:`IsnsMessage`
  responses; :func:`targets_from_query` turns a DevAttrQryRsp into
  :class:`~bootinit.iscsi.text.DiscoveredTarget` objects, exactly what SendTargets
  gives (each target with its portals and portal group tags, from the Portal Group
  objects, §6.5);
* :func:`isns_discover`: register, query, deregister over one TCP connection of
  bootinit's own stack (:meth:`netstack.stack.NetStack.open_stream`), port 3205.

::

    c = IsnsClient("iqn.2026-11.org.bootinit:host")
    out = c.register() + c.query_targets()       # bytes to send
    for msg in c.feed(received):                  # responses, in order
        msg.check()                               # IsnsStatusError unless SUCCESS
        targets = targets_from_query(msg)
"""

from __future__ import annotations

import ipaddress
import logging
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import TYPE_CHECKING

from bootinit.iscsi.text import DiscoveredTarget, Portal

if TYPE_CHECKING:
    from firmware_tables.config import BootConfig
    from netstack.stack import NetStack

log = logging.getLogger("bootinit.isns")

ISNS_PORT = 3205
"""The IANA port of iSNS (RFC 4171 §5.1)."""
ISNSP_VERSION = 1
HEADER_LEN = 12
MAX_PDU_PAYLOAD = 65532
"""Largest payload of one PDU (the 16-bit length, a multiple of 4)."""

_HDR = struct.Struct(">HHHHHH")


class IsnsError(Exception):
    """Malformed iSNSP data, or a server answer we cannot use."""


class IsnsStatusError(IsnsError):
    """The server answered with a non-zero status code (RFC 4171 §6.4.4 / §5.7.3)."""

    def __init__(self, function: int, status: int) -> None:
        self.function = function
        self.status = status
        try:
            text = Status(status).name.replace("_", " ").lower()
        except ValueError:
            text = f"status {status}"
        try:
            what = FunctionId(function).name
        except ValueError:
            what = f"function 0x{function:04x}"
        super().__init__(f"iSNS {what}: {text} ({status})")


class FunctionId(IntEnum):
    """iSNSP Function IDs (RFC 4171 §5.1.2 / §6.2); responses are ``| 0x8000``."""

    DevAttrReg = 0x0001
    DevAttrQry = 0x0002
    DevGetNext = 0x0003
    DevDereg = 0x0004
    SCNReg = 0x0005
    SCNDereg = 0x0006
    SCNEvent = 0x0007
    SCN = 0x0008
    DDReg = 0x0009
    DDDereg = 0x000A
    DDSReg = 0x000B
    DDSDereg = 0x000C
    ESI = 0x000D
    Heartbeat = 0x000E
    DevAttrRegRsp = 0x8001
    DevAttrQryRsp = 0x8002
    DevGetNextRsp = 0x8003
    DevDeregRsp = 0x8004
    SCNRegRsp = 0x8005
    SCNDeregRsp = 0x8006
    SCNEventRsp = 0x8007
    SCNRsp = 0x8008
    DDRegRsp = 0x8009
    DDDeregRsp = 0x800A
    DDSRegRsp = 0x800B
    DDSDeregRsp = 0x800C
    ESIRsp = 0x800D


RESPONSE_BIT = 0x8000


class Flags(IntEnum):
    """iSNSP header flags (RFC 4171 §5.1.4)."""

    CLIENT = 0x8000
    SERVER = 0x4000
    AUTH = 0x2000
    REPLACE = 0x1000
    LAST_PDU = 0x0800
    FIRST_PDU = 0x0400


class Status(IntEnum):
    """Response status codes (RFC 4171 §6.4.4 / §5.7.3)."""

    SUCCESSFUL = 0
    UNKNOWN_ERROR = 1
    MESSAGE_FORMAT_ERROR = 2
    INVALID_REGISTRATION = 3
    INVALID_QUERY = 5
    SOURCE_UNKNOWN = 6
    SOURCE_ABSENT = 7
    SOURCE_UNAUTHORIZED = 8
    NO_SUCH_ENTRY = 9
    VERSION_NOT_SUPPORTED = 10
    INTERNAL_ERROR = 11
    BUSY = 12
    OPTION_NOT_UNDERSTOOD = 13
    INVALID_UPDATE = 14
    MESSAGE_NOT_SUPPORTED = 15
    SCN_EVENT_REJECTED = 16
    SCN_REGISTRATION_REJECTED = 17
    ATTRIBUTE_NOT_IMPLEMENTED = 18
    ESI_NOT_AVAILABLE = 21
    INVALID_DEREGISTRATION = 22
    REGISTRATION_FEATURE_NOT_SUPPORTED = 23


class Tag(IntEnum):
    """The attribute tags this client uses (RFC 4171 §6.1)."""

    DELIMITER = 0
    ENTITY_IDENTIFIER = 1
    ENTITY_PROTOCOL = 2
    MGMT_IP_ADDRESS = 3
    TIMESTAMP = 4
    PROTOCOL_VERSION_RANGE = 5
    REGISTRATION_PERIOD = 6
    ENTITY_INDEX = 7
    PORTAL_IP_ADDRESS = 16
    PORTAL_PORT = 17
    PORTAL_SYMBOLIC_NAME = 18
    ESI_INTERVAL = 19
    ESI_PORT = 20
    PORTAL_INDEX = 22
    SCN_PORT = 23
    ISCSI_NAME = 32
    ISCSI_NODE_TYPE = 33
    ISCSI_ALIAS = 34
    ISCSI_SCN_BITMAP = 35
    ISCSI_NODE_INDEX = 36
    ISCSI_AUTH_METHOD = 42
    PG_ISCSI_NAME = 48
    PG_PORTAL_IP_ADDR = 49
    PG_PORTAL_PORT = 50
    PG_TAG = 51
    PG_INDEX = 52


ENTITY_PROTOCOL_ISCSI = 2
"""Entity Protocol value for iSCSI (RFC 4171 §6.2.2)."""
NODE_TARGET = 0x1
NODE_INITIATOR = 0x2
NODE_CONTROL = 0x4
"""iSCSI Node Type bits (RFC 4171 §6.4.2)."""

_STRING_TAGS = frozenset((Tag.ENTITY_IDENTIFIER, Tag.PORTAL_SYMBOLIC_NAME, Tag.ISCSI_NAME,
                          Tag.ISCSI_ALIAS, Tag.ISCSI_AUTH_METHOD, Tag.PG_ISCSI_NAME))
_IP_TAGS = frozenset((Tag.MGMT_IP_ADDRESS, Tag.PORTAL_IP_ADDRESS, Tag.PG_PORTAL_IP_ADDR))


# ------------------------------------------------------------------- attributes
@dataclass(frozen=True, slots=True)
class Attribute:
    """One TLV attribute (RFC 4171 §5.5): tag and raw value (padded to 4 bytes)."""

    tag: int
    value: bytes = b""

    # -- constructors ---------------------------------------------------------
    @classmethod
    def string(cls, tag: int, text: str) -> Attribute:
        """A NULL-terminated UTF-8 string padded to a multiple of 4 (§6.1)."""
        raw = text.encode("utf-8") + b"\0"
        return cls(tag, raw + b"\0" * (-len(raw) % 4))

    @classmethod
    def uint32(cls, tag: int, n: int) -> Attribute:
        """A 32-bit unsigned integer."""
        return cls(tag, struct.pack(">I", n))

    @classmethod
    def ip(cls, tag: int, address: str) -> Attribute:
        """A 16-byte IP address: IPv6, or IPv4 mapped as ``::ffff:a.b.c.d`` (§6.3.1)."""
        ip = ipaddress.ip_address(address)
        if isinstance(ip, ipaddress.IPv4Address):
            return cls(tag, b"\0" * 10 + b"\xff\xff" + ip.packed)
        return cls(tag, ip.packed)

    @classmethod
    def port(cls, tag: int, port: int, udp: bool = False) -> Attribute:
        """A TCP/UDP port: the port in the low 16 bits, bit 16 (0x10000) set for UDP."""
        return cls(tag, struct.pack(">I", (0x10000 if udp else 0) | port))

    @classmethod
    def empty(cls, tag: int) -> Attribute:
        """A zero-length attribute: "return this attribute" in a query (§5.6.5.2)."""
        return cls(tag, b"")

    # -- readers -----------------------------------------------------------------
    def as_string(self) -> str:
        """The string value (up to the first NUL)."""
        return self.value.split(b"\0", 1)[0].decode("utf-8", "replace")

    def as_uint32(self) -> int:
        """The value as a 32-bit unsigned integer."""
        if len(self.value) != 4:
            raise IsnsError(f"attribute {self.tag}: {len(self.value)} bytes, expected 4")
        return int(struct.unpack(">I", self.value)[0])

    def as_ip(self) -> str:
        """The IP address as text (IPv4-mapped addresses as dotted IPv4)."""
        if len(self.value) != 16:
            raise IsnsError(f"attribute {self.tag}: {len(self.value)} bytes, expected 16")
        ip = ipaddress.IPv6Address(self.value)
        return str(ip.ipv4_mapped) if ip.ipv4_mapped is not None else str(ip)

    def as_port(self) -> tuple[int, bool]:
        """(port, udp) of a port attribute."""
        n = self.as_uint32()
        return n & 0xFFFF, bool(n & 0x10000)

    def describe(self) -> str:
        """Readable ``tag=value`` (for logs and errors)."""
        try:
            name = Tag(self.tag).name.lower()
        except ValueError:
            name = f"tag{self.tag}"
        if not self.value:
            return f"{name}=<empty>"
        try:
            if self.tag in _STRING_TAGS:
                return f"{name}={self.as_string()!r}"
            if self.tag in _IP_TAGS:
                return f"{name}={self.as_ip()}"
            if len(self.value) == 4:
                return f"{name}={self.as_uint32()}"
        except IsnsError:
            pass
        return f"{name}=0x{self.value.hex()}"

    def encode(self) -> bytes:
        """Tag (4), length (4), value (§5.5)."""
        if len(self.value) % 4:
            raise IsnsError(f"attribute {self.tag}: value length {len(self.value)} is not "
                            "a multiple of 4")
        return struct.pack(">II", self.tag, len(self.value)) + self.value


def encode_attributes(attrs: Iterable[Attribute]) -> bytes:
    """Concatenated TLVs."""
    return b"".join(a.encode() for a in attrs)


def decode_attributes(data: bytes | memoryview) -> list[Attribute]:
    """Split a payload into TLVs; raises :class:`IsnsError` on a truncated one."""
    out: list[Attribute] = []
    mv = memoryview(data)
    off = 0
    while off < len(mv):
        if len(mv) - off < 8:
            raise IsnsError(f"truncated attribute header at offset {off}")
        tag, length = struct.unpack_from(">II", mv, off)
        off += 8
        if length % 4 or length > len(mv) - off:
            raise IsnsError(f"attribute {tag} at offset {off - 8}: bad length {length}")
        out.append(Attribute(tag, bytes(mv[off:off + length])))
        off += length
    return out


# -------------------------------------------------------------------------- PDUs
@dataclass(frozen=True, slots=True)
class PduHeader:
    """The 12-byte iSNSP header (RFC 4171 §5.1)."""

    function: int
    length: int
    flags: int
    xid: int
    seq: int
    version: int = ISNSP_VERSION

    def encode(self) -> bytes:
        """Network byte order, 12 bytes."""
        return _HDR.pack(self.version, self.function, self.length, self.flags, self.xid,
                         self.seq)

    @classmethod
    def decode(cls, data: bytes | bytearray | memoryview) -> PduHeader:
        """Parse the first 12 bytes."""
        if len(data) < HEADER_LEN:
            raise IsnsError(f"iSNSP header needs {HEADER_LEN} bytes, got {len(data)}")
        version, function, length, flags, xid, seq = _HDR.unpack_from(data, 0)
        if version != ISNSP_VERSION:
            raise IsnsError(f"iSNSP version {version}, expected {ISNSP_VERSION}")
        return cls(function, length, flags, xid, seq, version)


@dataclass(slots=True)
class IsnsMessage:
    """A whole iSNS message (one or more PDUs joined): function, transaction, payload.

    For responses ``status`` is the first four payload bytes and ``attributes`` the
    TLVs after it (§5.7); for requests ``status`` is None.
    """

    function: int
    xid: int
    flags: int
    payload: bytes
    status: int | None = None
    attributes: list[Attribute] = field(default_factory=list)

    @property
    def is_response(self) -> bool:
        """True for a response (Function ID with the high bit set)."""
        return bool(self.function & RESPONSE_BIT)

    def check(self) -> IsnsMessage:
        """Raise :class:`IsnsStatusError` unless the status is SUCCESSFUL; returns self."""
        if self.status not in (None, Status.SUCCESSFUL):
            assert self.status is not None
            raise IsnsStatusError(self.function & ~RESPONSE_BIT, self.status)
        return self


def encode_message(function: int, xid: int, payload: bytes, *, flags: int = Flags.CLIENT,
                   max_payload: int = MAX_PDU_PAYLOAD) -> bytes:
    """One message as PDUs: split at ``max_payload`` bytes with FIRST/LAST flags and
    sequence IDs 0, 1, ... (RFC 4171 §5.1.3, §5.1.4)."""
    if max_payload < 4 or max_payload % 4:
        raise ValueError("max_payload must be a positive multiple of 4")
    chunks = [payload[i:i + max_payload] for i in range(0, len(payload), max_payload)] or [b""]
    out = bytearray()
    for seq, chunk in enumerate(chunks):
        f = flags
        if seq == 0:
            f |= Flags.FIRST_PDU
        if seq == len(chunks) - 1:
            f |= Flags.LAST_PDU
        out += PduHeader(function, len(chunk), f, xid, seq).encode()
        out += chunk
    return bytes(out)


class MessageReader:
    """Reassembles iSNS messages from a byte stream (any chunking)."""

    def __init__(self, max_message: int = 4 << 20) -> None:
        self._buf = bytearray()
        self._parts: dict[int, tuple[PduHeader, bytearray, int]] = {}
        self.max_message = max_message

    def feed(self, data: bytes | memoryview) -> list[IsnsMessage]:
        """Add bytes; return every message completed by them."""
        self._buf += data
        out: list[IsnsMessage] = []
        while len(self._buf) >= HEADER_LEN:
            hdr = PduHeader.decode(self._buf)
            if len(self._buf) < HEADER_LEN + hdr.length:
                break
            chunk = bytes(self._buf[HEADER_LEN:HEADER_LEN + hdr.length])
            del self._buf[:HEADER_LEN + hdr.length]
            msg = self._add(hdr, chunk)
            if msg is not None:
                out.append(msg)
        return out

    def _add(self, hdr: PduHeader, chunk: bytes) -> IsnsMessage | None:
        key = hdr.xid
        if hdr.flags & Flags.FIRST_PDU or key not in self._parts:
            if not hdr.flags & Flags.FIRST_PDU and hdr.seq != 0:
                raise IsnsError(f"transaction {hdr.xid}: PDU {hdr.seq} without a first PDU")
            self._parts[key] = (hdr, bytearray(), 0)
        first, buf, seq = self._parts[key]
        if hdr.seq != seq:
            raise IsnsError(f"transaction {hdr.xid}: sequence ID {hdr.seq}, expected {seq}")
        if hdr.function != first.function:
            raise IsnsError(f"transaction {hdr.xid}: function changed within a message")
        buf += chunk
        if len(buf) > self.max_message:
            raise IsnsError(f"transaction {hdr.xid}: message over {self.max_message} bytes")
        if not hdr.flags & Flags.LAST_PDU:
            self._parts[key] = (first, buf, seq + 1)
            return None
        del self._parts[key]
        payload = bytes(buf)
        msg = IsnsMessage(hdr.function, hdr.xid, first.flags, payload)
        if msg.is_response:
            if len(payload) < 4:
                raise IsnsError(f"response 0x{hdr.function:04x} without a status code")
            msg.status = int(struct.unpack_from(">I", payload)[0])
            msg.attributes = decode_attributes(payload[4:])
        else:
            msg.attributes = decode_attributes(payload)
        return msg


# ------------------------------------------------------------------------ client
QUERY_ATTRIBUTES: tuple[int, ...] = (
    Tag.ISCSI_NAME, Tag.ISCSI_NODE_TYPE, Tag.ISCSI_ALIAS,
    Tag.PORTAL_IP_ADDRESS, Tag.PORTAL_PORT,
    Tag.PG_ISCSI_NAME, Tag.PG_PORTAL_IP_ADDR, Tag.PG_PORTAL_PORT, Tag.PG_TAG,
)
"""Operating attributes a target query asks for (what open-iscsi asks for)."""


class IsnsClient:
    """Sans-IO iSNS client for one initiator node (see module doc).

    Every request method returns the bytes to send and remembers the transaction;
    :meth:`feed` returns responses as they complete.  ``entity_id`` defaults to
    ``"bootinit:" + initiator_name``.
    """

    def __init__(self, initiator_name: str, *, entity_id: str | None = None,
                 alias: str | None = None, first_xid: int = 1) -> None:
        if not initiator_name:
            raise ValueError("an iSNS client needs our iSCSI name (the source attribute)")
        self.initiator_name = initiator_name
        self.entity_id = entity_id or f"bootinit:{initiator_name}"
        self.alias = alias
        self._xid = first_xid & 0xFFFF or 1
        self._reader = MessageReader()
        self.pending: dict[int, int] = {}
        """Transaction ID -> Function ID of requests still unanswered."""

    def _request(self, function: FunctionId, attrs: list[Attribute], flags: int = 0) -> bytes:
        xid = self._xid
        self._xid = (self._xid + 1) & 0xFFFF or 1
        self.pending[xid] = int(function)
        return encode_message(function, xid, encode_attributes(attrs),
                              flags=Flags.CLIENT | flags)

    @property
    def _source(self) -> Attribute:
        return Attribute.string(Tag.ISCSI_NAME, self.initiator_name)

    def register(self, portals: Iterable[tuple[str, int]] = ()) -> bytes:
        """DevAttrReg of our entity and initiator node (RFC 4171 §5.6.5.1).

        Key: the Entity Identifier; operating attributes: EID, Entity Protocol iSCSI,
        our portals (if given), our iSCSI Name with Node Type Initiator."""
        attrs = [self._source, Attribute.string(Tag.ENTITY_IDENTIFIER, self.entity_id),
                 Attribute(Tag.DELIMITER),
                 Attribute.string(Tag.ENTITY_IDENTIFIER, self.entity_id),
                 Attribute.uint32(Tag.ENTITY_PROTOCOL, ENTITY_PROTOCOL_ISCSI)]
        for host, port in portals:
            attrs += [Attribute.ip(Tag.PORTAL_IP_ADDRESS, host),
                      Attribute.port(Tag.PORTAL_PORT, port)]
        attrs += [Attribute.string(Tag.ISCSI_NAME, self.initiator_name),
                  Attribute.uint32(Tag.ISCSI_NODE_TYPE, NODE_INITIATOR)]
        if self.alias:
            attrs.append(Attribute.string(Tag.ISCSI_ALIAS, self.alias))
        return self._request(FunctionId.DevAttrReg, attrs, Flags.REPLACE)

    def query_targets(self, name: str | None = None) -> bytes:
        """DevAttrQry for the target nodes visible to us (RFC 4171 §5.6.5.2).

        Key: iSCSI Node Type = Target (or the target's iSCSI Name when ``name`` is
        given); operating attributes: :data:`QUERY_ATTRIBUTES`, zero-length."""
        key = (Attribute.string(Tag.ISCSI_NAME, name) if name is not None
               else Attribute.uint32(Tag.ISCSI_NODE_TYPE, NODE_TARGET))
        attrs = [self._source, key, Attribute(Tag.DELIMITER)]
        attrs += [Attribute.empty(t) for t in QUERY_ATTRIBUTES]
        return self._request(FunctionId.DevAttrQry, attrs)

    def deregister(self) -> bytes:
        """DevDereg of our entity (RFC 4171 §5.6.5.4): operating attribute the EID."""
        attrs = [self._source, Attribute(Tag.DELIMITER),
                 Attribute.string(Tag.ENTITY_IDENTIFIER, self.entity_id)]
        return self._request(FunctionId.DevDereg, attrs)

    def feed(self, data: bytes | memoryview) -> list[IsnsMessage]:
        """Received bytes; returns completed responses to our requests (others are
        dropped with a log line: SCN and ESI are not asked for)."""
        out = []
        for msg in self._reader.feed(data):
            want = self.pending.pop(msg.xid, None)
            if want is None or msg.function != want | RESPONSE_BIT:
                log.info("ignoring iSNS message 0x%04x (transaction %d)", msg.function,
                         msg.xid)
                continue
            out.append(msg)
        return out


def targets_from_query(msg: IsnsMessage, exclude: str | None = None) -> list[DiscoveredTarget]:
    """Targets of a DevAttrQryRsp (RFC 4171 §5.7.5.2), in the server's order.

    Storage nodes of type Target become :class:`DiscoveredTarget`; their portals are
    those of the Portal Group objects naming them (PG iSCSI Name, PG Portal IP/Port,
    PG Tag), else the portals of the same network entity (objects are listed entity
    by entity, each with its portals before its nodes, §5.6.5.2).  The message key
    echoed before the delimiter is skipped.  ``exclude`` drops a node by name.
    """
    msg.check()
    attrs = msg.attributes
    start = 0
    for i, a in enumerate(attrs):
        if a.tag == Tag.DELIMITER:
            start = i + 1
            break
    names: list[str] = []
    types: dict[str, int] = {}
    entity_of: dict[str, int] = {}
    entity_portals: dict[int, list[Portal]] = {}
    groups: dict[str, list[Portal]] = {}
    entity = 0
    node: str | None = None
    portal_ip: str | None = None
    pg: dict[int, Attribute] = {}
    last_tag = -1
    for a in attrs[start:]:
        t = a.tag
        if t == Tag.ENTITY_IDENTIFIER or (t == Tag.PORTAL_IP_ADDRESS and last_tag in (
                Tag.ISCSI_NAME, Tag.ISCSI_NODE_TYPE, Tag.ISCSI_ALIAS, Tag.PG_TAG)):
            entity += 1  # a new entity's portal after nodes: the next entity
        last_tag = t
        if t == Tag.ISCSI_NAME and a.value:
            node = a.as_string()
            if node not in types:
                names.append(node)
                types[node] = 0
                entity_of[node] = entity
        elif t == Tag.ISCSI_NODE_TYPE and node is not None and a.value:
            types[node] = a.as_uint32()
        elif t == Tag.PORTAL_IP_ADDRESS and a.value:
            portal_ip = a.as_ip()
        elif t == Tag.PORTAL_PORT and a.value and portal_ip is not None:
            port, udp = a.as_port()
            if not udp:
                entity_portals.setdefault(entity, []).append(Portal(portal_ip, port))
            portal_ip = None
        elif t in (Tag.PG_ISCSI_NAME, Tag.PG_PORTAL_IP_ADDR, Tag.PG_PORTAL_PORT, Tag.PG_TAG):
            if t == Tag.PG_ISCSI_NAME:
                pg = {}
            pg[t] = a
            if t == Tag.PG_TAG and all(k in pg for k in (
                    Tag.PG_ISCSI_NAME, Tag.PG_PORTAL_IP_ADDR, Tag.PG_PORTAL_PORT)):
                if a.value:  # an empty PGT: the node and portal are not associated
                    port, udp = pg[Tag.PG_PORTAL_PORT].as_port()
                    if not udp:
                        groups.setdefault(pg[Tag.PG_ISCSI_NAME].as_string(), []).append(
                            Portal(pg[Tag.PG_PORTAL_IP_ADDR].as_ip(), port, a.as_uint32()))
                pg = {}
    out = []
    for name in names:
        if name == exclude or not types[name] & NODE_TARGET:
            continue
        portals = groups.get(name) or entity_portals.get(entity_of[name], [])
        seen: list[Portal] = []
        for p in portals:
            if p not in seen:
                seen.append(p)
        out.append(DiscoveredTarget(name, tuple(seen)))
    return out


def parse_server(text: str, default_port: int = ISNS_PORT) -> tuple[str, int]:
    """``HOST[:PORT]`` or ``[V6]:PORT`` of an iSNS server (an IP literal)."""
    host, port = text, default_port
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError(f"iSNS server {text!r}: missing ']'")
        host, rest = text[1:end], text[end + 1:]
        if rest:
            if not rest.startswith(":") or not rest[1:].isdigit():
                raise ValueError(f"iSNS server {text!r}: expected ':PORT' after ']'")
            port = int(rest[1:])
    elif text.count(":") == 1:
        host, p = text.split(":")
        if not p.isdigit():
            raise ValueError(f"iSNS server {text!r}: port {p!r} is not a number")
        port = int(p)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"iSNS server {text!r}: {host!r} is not an IP address") from None
    if not 0 < port < 65536:
        raise ValueError(f"iSNS server {text!r}: port {port} is not 1..65535")
    return host, port


def isns_server_from_ibft(path: str | None = None) -> str | None:
    """The iSNS server of the iBFT Initiator structure (iBFT 1.03 §3.4.3), or None.

    ``path``: a table file; else the firmware's table (``/sys/firmware/ibft``, then
    the ACPI table exported by Linux).  A missing or unreadable table gives None."""
    from firmware_tables import FirmwareTableError
    from firmware_tables.ibft.find import find_acpi_table, read_table_file
    from firmware_tables.ibft.parse import parse_ibft
    from firmware_tables.ibft.sysfs import read_sysfs

    try:
        if path is not None:
            table = parse_ibft(read_table_file(path).data, strict=False)
        else:
            try:
                table = read_sysfs(strict=False)
            except (FirmwareTableError, OSError):
                table = parse_ibft(find_acpi_table().data, strict=False)
    except (FirmwareTableError, OSError) as e:
        log.info("no iBFT to take an iSNS server from: %s", e)
        return None
    ini = table.initiator
    server = ini.isns_server if ini is not None else None
    return str(server) if server is not None else None


def isns_server_of(config: BootConfig) -> tuple[str, int] | None:
    """``(address, 3205)`` of a boot configuration's iSNS server (from the iBFT), or None."""
    if config.isns_server is None:
        return None
    return str(config.isns_server), ISNS_PORT


# ---------------------------------------------------------------- blocking helper
def isns_discover(stack: NetStack, host: str, port: int, initiator_name: str, *,
                  register: bool = True, deregister: bool = True, timeout: float = 10.0,
                  our_portal: tuple[str, int] | None = None) -> list[DiscoveredTarget]:
    """Ask the iSNS server at ``host:port`` for the targets visible to
    ``initiator_name``, over bootinit's stack (RFC 4171).

    With ``register`` our initiator node is registered first (DevAttrReg) and, with
    ``deregister``, removed again afterwards; a server that refuses the query of an
    unregistered source (SOURCE_UNKNOWN / SOURCE_UNAUTHORIZED) is otherwise retried
    once after registering.
    """
    client = IsnsClient(initiator_name)
    stream = stack.open_stream(host, port, timeout)
    pending: list[IsnsMessage] = []

    def call(data: bytes) -> IsnsMessage:
        stream.sendall(data, timeout)
        while not pending:
            got = stream.recv_some(timeout)
            if not got:
                raise IsnsError(f"iSNS server {host}:{port} closed the connection")
            pending.extend(client.feed(got))
        return pending.pop(0)

    registered = False
    try:
        portals = [our_portal] if our_portal is not None else []
        if register:
            call(client.register(portals)).check()
            registered = True
        rsp = call(client.query_targets())
        if (not registered and rsp.status in (Status.SOURCE_UNKNOWN,
                                              Status.SOURCE_UNAUTHORIZED)):
            call(client.register(portals)).check()
            registered = True
            rsp = call(client.query_targets())
        targets = targets_from_query(rsp, exclude=initiator_name)
        if registered and deregister:
            try:
                call(client.deregister()).check()
            except IsnsError as e:
                log.warning("iSNS deregistration failed: %s", e)
        return targets
    finally:
        try:
            stream.close(timeout)
        except Exception as e:  # the answer is what counts; a lost FIN is not an error
            log.info("closing the iSNS connection: %s", e)
            stream.conn.abort(stack.loop.time())


__all__ = [
    "ISNS_PORT", "Attribute", "Flags", "FunctionId", "IsnsClient", "IsnsError",
    "IsnsMessage", "IsnsStatusError", "MessageReader", "PduHeader", "Status", "Tag",
    "decode_attributes", "encode_attributes", "encode_message", "isns_discover",
    "isns_server_from_ibft", "isns_server_of", "parse_server", "targets_from_query",
]
