"""Read and validate an iBFT (iBFT spec 1.03 §2 "Conventions", §3 "iBFT Layout").

``parse_ibft(data)`` checks at least what Linux (drivers/firmware/iscsi_ibft.c) checks
before it trusts a table -- revision 1, byte sum 0, Control id 1 / index 0 / length >= 18,
exact structure lengths, offsets inside the table -- and more: the signature, header
length against the bytes available, heap strings inside the table and NUL-terminated,
structures 8-byte aligned and not overlapping each other or the header, no string
inside a structure, reserved flag bits clear, known origin and CHAP type values, prefix
lengths that fit the address family, unique indices, and every valid target's NIC
association naming a NIC that exists.

Strict mode (the default) raises ``IbftError`` listing every problem; lenient mode
(``strict=False``) returns the table it could read with ``problems`` filled in. Only a
buffer too short to hold the 48-byte header raises in lenient mode.

Every read goes through ``_View``, which refuses to read past the table (the smaller of
the header's length and the buffer); the parser checks bounds before reading, so the
view's guard (``BoundsViolation``) never fires -- the property tests hold it to that.
"""

from __future__ import annotations

import bisect
from ipaddress import IPv4Address, IPv6Address

from firmware_tables.acpi import AcpiHeader, table_sum
from firmware_tables.errors import IbftError, Problem
from firmware_tables.ibft import layout as L
from firmware_tables.ibft.structures import (
    IbftControl,
    IbftHeader,
    IbftInitiator,
    IbftNic,
    IbftTable,
    IbftTarget,
    IPAddress,
)

BytesLike = bytes | bytearray | memoryview

_KIND_BY_ID = {L.ID_INITIATOR: "initiator", L.ID_NIC: "nic", L.ID_TARGET: "target"}
_ID_BY_KIND = {kind: sid for sid, kind in _KIND_BY_ID.items()}
_LENGTH_BY_KIND = {"initiator": L.INITIATOR_LENGTH, "nic": L.NIC_LENGTH, "target": L.TARGET_LENGTH}
_SLOT_KIND = {"initiator": "initiator", "nic0": "nic", "target0": "target", "nic1": "nic",
              "target1": "target"}
_SECRET_MASK = "***"


class BoundsViolation(RuntimeError):
    """Internal guard: the parser tried to read outside the table. A bug if ever seen."""


class _View:
    """Little-endian reads that refuse to leave ``[0, limit)``."""

    __slots__ = ("_data", "limit")

    def __init__(self, data: bytes, limit: int) -> None:
        self._data = data
        self.limit = min(limit, len(data))

    def fits(self, offset: int, size: int) -> bool:
        return offset >= 0 and size >= 0 and offset + size <= self.limit

    def raw(self, offset: int, size: int) -> bytes:
        if not self.fits(offset, size):
            raise BoundsViolation(f"read of {size} bytes at 0x{offset:x} outside 0x{self.limit:x}")
        return self._data[offset : offset + size]

    def u8(self, offset: int) -> int:
        return self.raw(offset, 1)[0]

    def u16(self, offset: int) -> int:
        return int.from_bytes(self.raw(offset, 2), "little")


def decode_ip(raw: bytes) -> IPAddress | None:
    """A 16-byte iBFT address field: IPv4-mapped -> IPv4, zero or ``::ffff:0.0.0.0`` -> None."""
    if raw[:12] == L.IPV4_MAPPED_PREFIX:
        v4 = IPv4Address(raw[12:16])
        return None if int(v4) == 0 else v4
    if not any(raw):
        return None
    return IPv6Address(raw)


def parse_ibft(data: BytesLike, *, strict: bool = True, exact_length: bool = False) -> IbftTable:
    """Parse an iBFT from ``data`` (the table at offset 0; trailing bytes are ignored).

    ``exact_length=True`` also reports bytes after the table (use it for a file that
    should hold exactly one table). Raises ``IbftError`` in strict mode when any problem
    is found, and in both modes when ``data`` cannot hold the 48-byte header.
    """
    parser = _Parser(bytes(data), exact_length)
    table = parser.parse()
    if strict and table.problems:
        raise IbftError(table.problems)
    return table


class _Parser:
    def __init__(self, data: bytes, exact_length: bool) -> None:
        self.data = data
        self.exact_length = exact_length
        self.problems: list[Problem] = []
        self.view = _View(data, 0)
        self.regions: list[tuple[int, int, str]] = []
        self.strings: list[tuple[int, int, str, str]] = []
        self.seen: dict[int, str] = {}
        self.initiator: IbftInitiator | None = None
        self.nics: list[tuple[str, IbftNic]] = []
        self.targets: list[tuple[str, IbftTarget]] = []
        self.expansion_count = {"nic": 0, "target": 0}

    def problem(
        self, structure: str, field: str, offset: int | None, value: object, message: str
    ) -> None:
        self.problems.append(Problem(structure, field, offset, value, message))

    # -- header (§3.3) ------------------------------------------------------------

    def parse(self) -> IbftTable:
        data = self.data
        n = len(data)
        if n < L.HEADER_LENGTH:
            raise IbftError(
                [Problem("header", "length", 0, n,
                         f"only {n} bytes: an iBFT starts with a {L.HEADER_LENGTH}-byte header")]
            )
        acpi = AcpiHeader.unpack(data)
        header = IbftHeader(
            signature=acpi.signature, length=acpi.length, revision=acpi.revision,
            checksum=acpi.checksum, oem_id=acpi.oem_id, oem_table_id=acpi.oem_table_id,
            oem_revision=acpi.oem_revision, creator_id=acpi.creator_id,
            creator_revision=acpi.creator_revision,
        )
        if data[0:4].decode("latin-1") not in L.SIGNATURES:
            self.problem("header", "signature", 0, data[0:4],
                         "expected 'iBFT' (Linux also accepts 'IBFT' and 'BIFT')")
        length = acpi.length
        if length > n:
            self.problem("header", "length", 4, length,
                         f"the table claims {length} bytes but only {n} are available")
        elif length < L.HEADER_LENGTH + L.CONTROL_MIN_LENGTH:
            self.problem("header", "length", 4, length,
                         f"shorter than the header and Control structure "
                         f"({L.HEADER_LENGTH + L.CONTROL_MIN_LENGTH} bytes)")
        elif self.exact_length and n > length:
            self.problem("header", "length", 4, length,
                         f"the input has {n - length} bytes after the end of the table")
        if acpi.revision != L.REVISION:
            self.problem("header", "revision", 8, acpi.revision, "expected 1")
        if length <= n:
            total = table_sum(data[:length])
            if total:
                fixed = (acpi.checksum - total) & 0xFF
                self.problem("header", "checksum", 9, acpi.checksum,
                             f"the byte sum of the table is 0x{total:02x}, not 0 "
                             f"(a correct checksum would be 0x{fixed:02x})")
        reserved = data[L.HEADER_RESERVED_OFFSET : L.HEADER_LENGTH]
        if any(reserved):
            self.problem("header", "reserved", L.HEADER_RESERVED_OFFSET, reserved,
                         "reserved bytes must be zero")
        self.view = _View(data, length)
        self.regions.append((0, L.HEADER_LENGTH, "header"))
        control = self.parse_control()
        if control is not None:
            self.cross_checks()
        return IbftTable(
            header=header,
            control=control,
            initiator=self.initiator,
            nics=tuple(nic for _, nic in self.nics),
            targets=tuple(tgt for _, tgt in self.targets),
            problems=tuple(self.problems),
        )

    # -- control (§3.4) -----------------------------------------------------------

    def parse_control(self) -> IbftControl | None:
        v = self.view
        c = L.CONTROL_OFFSET
        if not v.fits(c, L.STRUCTURE_HEADER_LENGTH):
            self.problem("control", "id", c, None,
                         f"the Control structure at 0x{c:x} lies outside the table "
                         f"(which ends at 0x{v.limit:x})")
            return None
        cid, cver, clen = v.u8(c), v.u8(c + 1), v.u16(c + 2)
        cidx, cflags = v.u8(c + 4), v.u8(c + 5)
        if cid != L.ID_CONTROL:
            self.problem("control", "id", c, cid, "expected 1 (Control)")
        if cver != L.STRUCTURE_VERSION:
            self.problem("control", "version", c + 1, cver, "expected 1")
        if clen < L.CONTROL_MIN_LENGTH:
            self.problem("control", "length", c + 2, clen,
                         f"shorter than {L.CONTROL_MIN_LENGTH} bytes")
        elif clen % 2:
            self.problem("control", "length", c + 2, clen,
                         "odd length: the structure offsets are 16-bit")
        if cidx != 0:
            self.problem("control", "index", c + 4, cidx, "expected 0")
        if cflags & ~L.CONTROL_FLAGS_DEFINED:
            self.problem("control", "flags", c + 5, cflags,
                         f"reserved bits 0x{cflags & ~L.CONTROL_FLAGS_DEFINED & 0xFF:02x} set")
        end = c + clen
        if end > v.limit:
            self.problem("control", "length", c + 2, clen,
                         f"the Control structure ends at 0x{end:x}, past the end of the "
                         f"table (0x{v.limit:x})")
            end = v.limit
        self.regions.append((c, max(end, c + L.STRUCTURE_HEADER_LENGTH), "control"))
        extensions = v.u16(c + L.CTL_EXTENSIONS) if c + L.CTL_FIRST_OFFSET <= end else 0
        offsets: list[int] = []
        pos = c + L.CTL_FIRST_OFFSET
        while pos + 2 <= end:
            offsets.append(v.u16(pos))
            pos += 2
        for i, off in enumerate(offsets):
            if off:
                slot = L.CONTROL_SLOTS[i] if i < len(L.CONTROL_SLOTS) else f"expansion{i - 5}"
                self.parse_structure(slot, c + L.CTL_FIRST_OFFSET + 2 * i, off)
        return IbftControl(version=cver, length=clen, index=cidx, flags=cflags,
                           extensions=extensions, structure_offsets=tuple(offsets))

    def parse_structure(self, slot: str, field_at: int, off: int) -> None:
        v = self.view
        field = f"{slot}_offset"
        if not v.fits(off, L.STRUCTURE_HEADER_LENGTH):
            self.problem("control", field, field_at, off,
                         f"points outside the table (which ends at 0x{v.limit:x})")
            return
        sid = v.u8(off)
        expected = _SLOT_KIND.get(slot)
        if sid == L.ID_RESERVED:
            size = min(_LENGTH_BY_KIND[expected] if expected else L.TARGET_LENGTH, v.limit - off)
            if not any(v.raw(off, size)):
                return  # an unused, zero-filled slot (iPXE leaves those); Linux skips id 0
        kind = _KIND_BY_ID.get(sid)
        if kind is None:
            self.problem(slot, "id", off, sid,
                         "not an Initiator (2), NIC (3) or Target (4) structure")
            return
        if expected is None and kind == "initiator":
            self.problem(slot, "id", off, sid,
                         "expansion offsets may only point at NIC or Target structures")
            return
        if expected is not None and kind != expected:
            self.problem(slot, "id", off, sid,
                         f"the {slot} slot must point at a {expected} structure "
                         f"(id {_ID_BY_KIND[expected]})")
            if kind == "initiator":
                return
        if off in self.seen:
            self.problem("control", field, field_at, off,
                         f"the structure at 0x{off:x} is already referenced as {self.seen[off]}")
            return
        if expected == kind:
            name = slot
        elif expected is None:
            name = f"{kind}{2 + self.expansion_count[kind]}"
            self.expansion_count[kind] += 1
        else:
            name = f"{slot}:{kind}"
        self.seen[off] = name
        if off % L.ALIGNMENT:
            self.problem("control", field, field_at, off,
                         f"{name} is not {L.ALIGNMENT}-byte aligned")
        want = _LENGTH_BY_KIND[kind]
        slen = v.u16(off + L.HDR_LENGTH)
        if slen != want:
            self.problem(name, "length", off + L.HDR_LENGTH, slen, f"expected {want}")
        if not v.fits(off, want):
            self.problem(name, "length", off + L.HDR_LENGTH, slen,
                         f"the structure [0x{off:x}, 0x{off + want:x}) extends past the end "
                         f"of the table (0x{v.limit:x})")
            return
        version = v.u8(off + L.HDR_VERSION)
        if version != L.STRUCTURE_VERSION:
            self.problem(name, "version", off + L.HDR_VERSION, version, "expected 1")
        self.regions.append((off, off + want, name))
        index = v.u8(off + L.HDR_INDEX)
        if name == slot != "initiator" and index != int(slot[-1]):
            self.problem(name, "index", off + L.HDR_INDEX, index,
                         f"the {slot} slot holds a structure with index {index}")
        if kind == "initiator":
            self.initiator = self.parse_initiator(name, off, version)
        elif kind == "nic":
            self.nics.append((name, self.parse_nic(name, off, version)))
        else:
            self.targets.append((name, self.parse_target(name, off, version)))

    # -- fields -----------------------------------------------------------------------

    def flags(self, name: str, off: int, defined: int) -> int:
        flags = self.view.u8(off + L.HDR_FLAGS)
        if flags & ~defined:
            self.problem(name, "flags", off + L.HDR_FLAGS, flags,
                         f"reserved bits 0x{flags & ~defined & 0xFF:02x} set")
        return flags

    def ip(self, at: int) -> IPAddress | None:
        return decode_ip(self.view.raw(at, L.IP_LENGTH))

    def string(self, name: str, field: str, at: int, *, secret: bool = False) -> str | None:
        """A heap string from its (u16 length, u16 offset) descriptor at ``at``."""
        v = self.view
        length, off = v.u16(at), v.u16(at + 2)
        if length == 0 and off == 0:
            return None
        if off == 0:
            self.problem(name, field, at + 2, 0, f"length {length} but offset 0")
            return None
        if off >= v.limit:
            self.problem(name, field, at + 2, off,
                         f"the string offset points past the end of the table (0x{v.limit:x})")
            return None
        end = off + length
        if end > v.limit:
            self.problem(name, field, at, length,
                         f"the string [0x{off:x}, 0x{end:x}) extends past the end of the "
                         f"table (0x{v.limit:x})")
            raw = v.raw(off, v.limit - off)
        else:
            raw = v.raw(off, length)
            if end == v.limit:
                self.problem(name, field, end, None,
                             "the string is not NUL-terminated (the table ends after it)")
            elif v.u8(end) != 0:
                self.problem(name, field, end, v.u8(end), "the string is not NUL-terminated")
        shown: object = _SECRET_MASK if secret else raw
        if 0 in raw:
            self.problem(name, field, off + raw.index(0), shown,
                         "the string holds a NUL byte inside its length")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            self.problem(name, field, off + exc.start, shown, "the string is not valid UTF-8")
            text = raw.decode("utf-8", "backslashreplace")
        self.strings.append((off, min(end + 1, v.limit), name, field))
        return text

    # -- structures (§3.5-3.7) -------------------------------------------------------

    def parse_initiator(self, name: str, off: int, version: int) -> IbftInitiator:
        v = self.view
        flags = self.flags(name, off, L.INITIATOR_FLAGS_DEFINED)
        index = v.u8(off + L.HDR_INDEX)
        if index != 0:
            self.problem(name, "index", off + L.HDR_INDEX, index, "expected 0")
        return IbftInitiator(
            name=self.string(name, "name", off + L.INI_NAME),
            flags=flags,
            isns_server=self.ip(off + L.INI_ISNS),
            slp_server=self.ip(off + L.INI_SLP),
            primary_radius_server=self.ip(off + L.INI_PRI_RADIUS),
            secondary_radius_server=self.ip(off + L.INI_SEC_RADIUS),
            index=index,
            version=version,
            offset=off,
        )

    def parse_nic(self, name: str, off: int, version: int) -> IbftNic:
        v = self.view
        flags = self.flags(name, off, L.NIC_FLAGS_DEFINED)
        ip = self.ip(off + L.NIC_IP)
        prefix = v.u8(off + L.NIC_PREFIX)
        origin = v.u8(off + L.NIC_ORIGIN)
        if origin not in L.ORIGINS:
            self.problem(name, "origin", off + L.NIC_ORIGIN, origin,
                         "not an IP prefix origin (0-4 or 15)")
        limit = 32 if isinstance(ip, IPv4Address) else 128
        if prefix > limit:
            self.problem(name, "prefix_length", off + L.NIC_PREFIX, prefix,
                         f"longer than {limit} bits")
        return IbftNic(
            index=v.u8(off + L.HDR_INDEX),
            flags=flags,
            ip_address=ip,
            prefix_length=prefix,
            origin=origin,
            gateway=self.ip(off + L.NIC_GATEWAY),
            primary_dns=self.ip(off + L.NIC_PRIMARY_DNS),
            secondary_dns=self.ip(off + L.NIC_SECONDARY_DNS),
            dhcp_server=self.ip(off + L.NIC_DHCP),
            vlan=v.u16(off + L.NIC_VLAN),
            mac=v.raw(off + L.NIC_MAC, 6),
            pci_bdf=v.u16(off + L.NIC_PCI_BDF),
            hostname=self.string(name, "hostname", off + L.NIC_HOSTNAME),
            version=version,
            offset=off,
        )

    def parse_target(self, name: str, off: int, version: int) -> IbftTarget:
        v = self.view
        flags = self.flags(name, off, L.TARGET_FLAGS_DEFINED)
        chap_type = v.u8(off + L.TGT_CHAP_TYPE)
        tgt = IbftTarget(
            index=v.u8(off + L.HDR_INDEX),
            flags=flags,
            ip_address=self.ip(off + L.TGT_IP),
            port=v.u16(off + L.TGT_PORT),
            lun=v.raw(off + L.TGT_LUN, 8),
            chap_type=chap_type,
            nic_association=v.u8(off + L.TGT_NIC_ASSOC),
            name=self.string(name, "name", off + L.TGT_NAME),
            chap_name=self.string(name, "chap_name", off + L.TGT_CHAP_NAME),
            chap_secret=self.string(name, "chap_secret", off + L.TGT_CHAP_SECRET, secret=True),
            reverse_chap_name=self.string(name, "reverse_chap_name", off + L.TGT_REV_CHAP_NAME),
            reverse_chap_secret=self.string(
                name, "reverse_chap_secret", off + L.TGT_REV_CHAP_SECRET, secret=True
            ),
            version=version,
            offset=off,
        )
        if chap_type > L.CHAP_MUTUAL:
            self.problem(name, "chap_type", off + L.TGT_CHAP_TYPE, chap_type,
                         "expected 0 (none), 1 (CHAP) or 2 (mutual CHAP)")
        needs = (
            ("chap_name", L.TGT_CHAP_NAME, tgt.chap_name, L.CHAP_ONE_WAY),
            ("chap_secret", L.TGT_CHAP_SECRET, tgt.chap_secret, L.CHAP_ONE_WAY),
            ("reverse_chap_name", L.TGT_REV_CHAP_NAME, tgt.reverse_chap_name, L.CHAP_MUTUAL),
            ("reverse_chap_secret", L.TGT_REV_CHAP_SECRET, tgt.reverse_chap_secret,
             L.CHAP_MUTUAL),
        )
        for field, rel, value, needed_from in needs:
            if chap_type > L.CHAP_MUTUAL:
                break
            if chap_type >= needed_from and value is None:
                self.problem(name, field, off + rel, chap_type,
                             f"CHAP type {chap_type} needs a {field.replace('_', ' ')}")
            elif chap_type < needed_from and value is not None:
                self.problem(name, field, off + rel, chap_type,
                             f"a {field.replace('_', ' ')} is present but the CHAP type is "
                             f"{chap_type}")
        if tgt.valid and tgt.ip_address is None:
            self.problem(name, "ip_address", off + L.TGT_IP, None,
                         "a valid target needs an IP address")
        if tgt.valid and tgt.port == 0:
            self.problem(name, "port", off + L.TGT_PORT, 0, "a valid target needs a port")
        return tgt

    # -- whole-table checks -----------------------------------------------------------------

    def cross_checks(self) -> None:
        # Structures must not overlap each other, the header or the Control structure.
        regions = sorted(self.regions)
        widest: tuple[int, int, str] | None = None
        for start, end, name in regions:
            if widest is not None and start < widest[1]:
                self.problem(name, "offset", start, start,
                             f"{name} [0x{start:x}, 0x{end:x}) overlaps {widest[2]} "
                             f"[0x{widest[0]:x}, 0x{widest[1]:x})")
            if widest is None or end > widest[1]:
                widest = (start, end, name)
        # Heap strings must lie outside every structure.
        merged: list[list[int]] = []
        for start, end, _ in regions:
            if merged and start <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], end)
            else:
                merged.append([start, end])
        starts = [m[0] for m in merged]
        for start, end, name, field in self.strings:
            i = bisect.bisect_right(starts, start) - 1
            hit = (i >= 0 and merged[i][1] > start) or (
                i + 1 < len(merged) and merged[i + 1][0] < end
            )
            if hit:
                self.problem(name, field, start, start,
                             f"the string [0x{start:x}, 0x{end:x}) overlaps a table structure")
        # Indices must be unique; targets must name an existing NIC.
        for items, what in ((self.nics, "NIC"), (self.targets, "target")):
            by_index: dict[int, str] = {}
            for name, item in items:
                if item.index in by_index:
                    self.problem(name, "index", item.offset + L.HDR_INDEX, item.index,
                                 f"{what} index already used by {by_index[item.index]}")
                else:
                    by_index[item.index] = name
        nic_indices = {nic.index for _, nic in self.nics}
        for name, tgt in self.targets:
            if tgt.valid and tgt.nic_association not in nic_indices:
                self.problem(name, "nic_association", tgt.offset + L.TGT_NIC_ASSOC,
                             tgt.nic_association, "no NIC structure has this index")
