"""Typed errors of the firmware_tables package.

Every way bad input can fail ends in one of these (never a bare ``struct.error``,
``IndexError`` or ``UnicodeDecodeError``). A table problem names the structure, the
field, the absolute byte offset inside the table and the offending value (iBFT spec
1.03 §2.4 "Length and Offset Values": offsets are relative to the start of the table).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


def format_value(value: object) -> str:
    """Render a problem value: integers in decimal and hex, bytes/str as repr."""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value) if 0 <= value < 10 else f"{value} (0x{value:x})"
    return repr(value)


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a table.

    ``structure`` is e.g. ``"header"``, ``"control"``, ``"initiator"``, ``"nic1"``,
    ``"target0"``; ``field`` a field of it (``"checksum"``, ``"flags"``,
    ``"name"``...); ``offset`` the absolute offset of that field (or of the byte
    found wrong) in the table, ``None`` when the source has no byte offsets (sysfs).
    """

    structure: str
    field: str
    offset: int | None
    value: object
    message: str

    def __str__(self) -> str:
        where = f"{self.structure}.{self.field}"
        if self.offset is not None:
            where += f" at offset 0x{self.offset:x}"
        return f"{where}: {self.message} (value {format_value(self.value)})"


class FirmwareTableError(Exception):
    """Base class of every error raised by this package."""


class IbftError(FirmwareTableError, ValueError):
    """A table was rejected (strict parse, or a table that cannot be read at all).

    ``problems`` lists every problem found; ``structure``, ``field``, ``offset`` and
    ``value`` are those of the first one, which the message names.
    """

    def __init__(self, problems: Sequence[Problem]) -> None:
        if not problems:
            raise ValueError("IbftError needs at least one problem")
        self.problems: tuple[Problem, ...] = tuple(problems)
        first = self.problems[0]
        self.structure = first.structure
        self.field = first.field
        self.offset = first.offset
        self.value = first.value
        more = len(self.problems) - 1
        text = f"invalid iBFT: {first}"
        if more:
            text += f" (and {more} more problem{'s' if more > 1 else ''})"
        super().__init__(text)


class TableNotFoundError(FirmwareTableError, LookupError):
    """No table where one was looked for (file, ACPI directory, memory scan, sysfs)."""


class UriError(FirmwareTableError, ValueError):
    """An ``iscsi://`` URL or an RFC 4173 root path is malformed.

    ``part`` names the part at fault (``"scheme"``, ``"host"``, ``"port"``, ``"lun"``,
    ``"target"``, ``"credentials"``, ``"protocol"``, ``"query"``); ``text`` is the
    input with any secret masked, so the error can be logged.
    """

    def __init__(self, message: str, *, part: str, text: str) -> None:
        self.part = part
        self.text = text
        super().__init__(f"{message}: {text!r}")


class ConfigError(FirmwareTableError, ValueError):
    """A boot configuration is invalid; ``path`` names the setting (``targets[0].port``)."""

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        self.message = message
        super().__init__(f"{path}: {message}" if path else message)
