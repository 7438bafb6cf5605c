"""Sense data (SPC-4 §4.5) and ScsiError."""

from __future__ import annotations

import pytest

from bootinit.scsi.sense import (
    ScsiError,
    SenseFormatError,
    SenseKey,
    Status,
    asc_text,
    decode_sense,
)


def hx(s: str) -> bytes:
    return bytes.fromhex(s.replace(" ", ""))


# ILLEGAL REQUEST / LBA out of range, fixed format, as tgtd sends it
FIXED_LBA = hx("70 00 05 00 00 00 00 0a 00 00 00 00 21 00 00 00 00 00")
# MEDIUM ERROR, unrecovered read error, with VALID information = LBA 0x1234
FIXED_MEDIUM = hx("f0 00 03 00 00 12 34 0a 00 00 00 00 11 00 00 00 00 00")
# UNIT ATTENTION power on/reset, descriptor format
DESC_UA = hx("72 06 29 00 00 00 00 00")
# Descriptor with an information descriptor (LBA 2**40) and sense-key specific
DESC_INFO = hx("72 03 11 00 00 00 00 14"
               "00 0a 80 00 00 00 01 00 00 00 00 00"
               "02 06 00 00 80 00 10 00")


def test_fixed_lba_out_of_range() -> None:
    s = decode_sense(FIXED_LBA)
    assert (s.key, s.asc, s.ascq) == (SenseKey.ILLEGAL_REQUEST, 0x21, 0)
    assert s.text == "ILLEGAL REQUEST: logical block address out of range"
    assert s.information is None and not s.deferred and not s.descriptor_format


def test_fixed_medium_error_information() -> None:
    s = decode_sense(FIXED_MEDIUM)
    assert s.key == SenseKey.MEDIUM_ERROR and s.information == 0x1234
    assert "unrecovered read error" in str(s)


def test_descriptor_unit_attention() -> None:
    s = decode_sense(DESC_UA)
    assert s.descriptor_format and s.key == SenseKey.UNIT_ATTENTION
    assert s.text == "UNIT ATTENTION: power on, reset, or bus device reset occurred"


def test_descriptor_information() -> None:
    s = decode_sense(DESC_INFO)
    assert s.information == 1 << 40 and s.sense_key_specific == hx("80 00 10")


def test_deferred() -> None:
    assert decode_sense(hx("71 00 02 00 00 00 00 06 00 00 00 00 04 01")).deferred


def test_truncated_fixed_sense() -> None:
    s = decode_sense(hx("70 00 02 00 00 00 00 00"))  # additional length 0
    assert s.key == SenseKey.NOT_READY and s.asc == 0


@pytest.mark.parametrize("raw", [b"", b"\x70", hx("7f 00 00 00 00 00 00 00"), hx("72 00 00")])
def test_bad_sense(raw: bytes) -> None:
    with pytest.raises(SenseFormatError):
        decode_sense(raw)


def test_asc_text_fallbacks() -> None:
    assert asc_text(0x04, 0x01) == "logical unit is in process of becoming ready"
    assert asc_text(0x29, 0x55).startswith("power on, reset")
    assert asc_text(0x77, 0x01) == "ASC 0x77 ASCQ 0x01"


def test_scsi_error() -> None:
    e = ScsiError.from_response(Status.CHECK_CONDITION, FIXED_LBA, opcode=0x28)
    assert str(e) == ("SCSI command 0x28 failed with CHECK CONDITION: ILLEGAL REQUEST: "
                      "logical block address out of range (key 0x5 ASC 0x21 ASCQ 0x00)")
    assert not e.retryable
    assert ScsiError.from_response(Status.CHECK_CONDITION, DESC_UA).retryable
    assert ScsiError(Status.BUSY).retryable
    assert "TASK SET FULL" in str(ScsiError(Status.TASK_SET_FULL))
    bad = ScsiError.from_response(Status.CHECK_CONDITION, b"\x01\x02")
    assert bad.sense is None and bad.raw_sense == b"\x01\x02"
    assert "status 0x99" in str(ScsiError(0x99))
