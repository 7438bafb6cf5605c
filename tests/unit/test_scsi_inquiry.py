"""INQUIRY, VPD, REPORT LUNS and READ CAPACITY decoders with real-looking data."""

from __future__ import annotations

import pytest

from bootinit.scsi.capacity import (
    CapacityFormatError,
    decode_read_capacity_10,
    decode_read_capacity_16,
)
from bootinit.scsi.inquiry import (
    Association,
    BlockLimits,
    DesignatorType,
    InquiryFormatError,
    PeripheralType,
    decode_block_limits,
    decode_device_identification,
    decode_standard_inquiry,
    decode_supported_pages,
    decode_unit_serial,
    lu_identifier,
)
from bootinit.scsi.lun import (
    LunFormatError,
    decode_lun,
    decode_report_luns,
    decode_report_luns_numbers,
    encode_lun,
    lun_field,
    report_luns_length,
)


def hx(s: str) -> bytes:
    return bytes.fromhex(s.replace(" ", "").replace("\n", ""))


# tgtd's standard INQUIRY for a disk LUN (SPC-3, CmdQue), 36 bytes shown
TGT_INQUIRY = (hx("00 00 05 12 3b 00 00 02") + b"IET     " + b"VIRTUAL-DISK    " + b"0001")


def test_standard_inquiry_tgtd() -> None:
    inq = decode_standard_inquiry(TGT_INQUIRY + bytes(60 - 36 + 5))
    assert inq.vendor == "IET" and inq.product == "VIRTUAL-DISK" and inq.revision == "0001"
    assert inq.device_type == PeripheralType.DISK and inq.qualifier == 0 and inq.is_disk
    assert inq.version == 5 and inq.response_format == 2 and inq.cmdque
    assert not inq.removable


def test_standard_inquiry_controller_lun0_and_short() -> None:
    raw = hx("0c 00 05 02 1f 00 00 00") + b"LIO-ORG " + b"RAMDISK-MCP     " + b"4.0 "
    inq = decode_standard_inquiry(raw)
    assert inq.device_type == 0x0C and not inq.is_disk and inq.revision == "4.0"
    nolu = decode_standard_inquiry(hx("7f 00 00 00 00"))
    assert nolu.qualifier == 3 and nolu.device_type == 0x1F and nolu.vendor == ""
    with pytest.raises(InquiryFormatError):
        decode_standard_inquiry(b"\x00\x00")


def test_vpd_supported_and_serial() -> None:
    assert decode_supported_pages(hx("00 00 00 04 00 80 83 b0")) == [0x00, 0x80, 0x83, 0xB0]
    serial = hx("00 80 00 10") + b"beaf11          "
    assert decode_unit_serial(serial) == "beaf11"
    with pytest.raises(InquiryFormatError, match="PAGE CODE"):
        decode_unit_serial(hx("00 83 00 00"))
    with pytest.raises(InquiryFormatError, match="PAGE LENGTH"):
        decode_unit_serial(hx("00 80 00 20") + b"short")


def test_vpd_83_designators() -> None:
    naa = hx("01 03 00 10 60 01 40 5e 7c 71 5a 4e 9f 80 33 1c 96 24 c1 7b")
    t10 = hx("02 01 00 18") + b"IET     " + bytes.fromhex("00010001") + b"\0" * 12
    port = hx("61 94 00 04 00 00 00 01")  # iSCSI, target port, relative port 1
    name = hx("53 98 00 10") + b"iqn.x:disk,t,0x1"  # SCSI name string, target port
    page = hx("00 83") + (len(naa + t10 + port + name)).to_bytes(2, "big") + naa + t10 + port + name
    ds = decode_device_identification(page)
    assert [d.type for d in ds] == [DesignatorType.NAA, DesignatorType.T10_VENDOR_ID,
                                   DesignatorType.RELATIVE_TARGET_PORT,
                                   DesignatorType.SCSI_NAME_STRING]
    assert ds[0].text == "naa.6001405e7c715a4e9f80331c9624c17b"
    assert ds[0].association == Association.LOGICAL_UNIT
    assert ds[2].association == Association.TARGET_PORT and ds[2].piv and ds[2].protocol == 6
    assert ds[3].text == "iqn.x:disk,t,0x1"
    best = lu_identifier(ds)
    assert best is not None and best.type == DesignatorType.NAA
    with pytest.raises(InquiryFormatError, match="DESIGNATOR LENGTH"):
        decode_device_identification(hx("00 83 00 06 01 03 00 10 60 01"))


def test_lun_encoding_both_ways() -> None:
    # One convention (firmware_tables.lun, as Linux and libiscsi): the integer's low 16
    # bits are the first level as sent, so a flat-space LUN 300 (41 2C) is 0x412C.
    assert encode_lun(0) == bytes(8)
    assert encode_lun(5) == hx("00 05 00 00 00 00 00 00")
    assert encode_lun(300) == hx("01 2c 00 00 00 00 00 00")
    assert decode_lun(hx("41 2c 00 00 00 00 00 00")) == 0x412C
    assert encode_lun(0x412C) == hx("41 2c 00 00 00 00 00 00")
    assert lun_field(1) == 0x0001000000000000
    for n in (0, 1, 255, 256, 1000, 16383, 0x412C, 0x0002_0001):
        assert decode_lun(encode_lun(n)) == n
        assert decode_lun(lun_field(n)) == n
    assert decode_lun(hx("00 01 00 02 00 00 00 00")) == 0x0002_0001  # multi-level
    with pytest.raises(LunFormatError):
        encode_lun(1 << 64)
    with pytest.raises(LunFormatError, match="8 bytes"):
        decode_lun(hx("00 01"))


def test_report_luns() -> None:
    data = hx("00 00 00 18 00 00 00 00") + encode_lun(0) + encode_lun(1) + encode_lun(300)
    assert decode_report_luns_numbers(data) == [0, 1, 300]
    assert report_luns_length(data) == 32
    truncated = data[:20]  # allocation length too small: complete entries only
    assert decode_report_luns(truncated) == [encode_lun(0)]
    with pytest.raises(LunFormatError):
        decode_report_luns(hx("00 00 00 05 00 00 00 00"))


def test_read_capacity_10() -> None:
    cap = decode_read_capacity_10(hx("00 1f ff ff 00 00 02 00"))  # 1 GiB of 512
    assert cap is not None and cap.blocks == 0x200000 and cap.size_bytes == 1 << 30
    assert decode_read_capacity_10(hx("ff ff ff ff 00 00 02 00")) is None
    with pytest.raises(CapacityFormatError, match="BLOCK LENGTH"):
        decode_read_capacity_10(hx("00 00 00 10 00 00 00 00"))


def test_read_capacity_16() -> None:
    raw = hx("00 00 00 01 ff ff ff ff 00 00 02 00 00 03 c0 08") + bytes(16)
    cap = decode_read_capacity_16(raw)
    assert cap.last_lba == 0x1FFFFFFFF and cap.block_size == 512
    assert cap.size_bytes == 0x200000000 * 512  # 4 TiB
    assert cap.physical_block_size == 4096 and cap.physical_exponent == 3
    assert cap.thin_provisioned and cap.unmapped_reads_zero and cap.lowest_aligned_lba == 8
    with pytest.raises(CapacityFormatError):
        decode_read_capacity_16(bytes(8))


def test_block_limits() -> None:
    """VPD 0xB0 (SBC-4 §6.6.4): MAXIMUM TRANSFER LENGTH at bytes 8-11, OPTIMAL at 12-15,
    0 meaning not reported; a page too short to hold them is a clear error."""
    page = bytearray(64)
    page[1] = 0xB0
    page[3] = 60
    page[8:12] = (4096).to_bytes(4, "big")
    page[12:16] = (512).to_bytes(4, "big")
    assert decode_block_limits(page) == BlockLimits(4096, 512)
    page[8:16] = bytes(8)
    assert decode_block_limits(page) == BlockLimits(None, None)
    with pytest.raises(InquiryFormatError, match="PAGE LENGTH"):
        decode_block_limits(bytes((0, 0xB0, 0, 8)) + bytes(8))
    with pytest.raises(InquiryFormatError, match="PAGE CODE"):
        decode_block_limits(bytes((0, 0xB1, 0, 60)) + bytes(60))
