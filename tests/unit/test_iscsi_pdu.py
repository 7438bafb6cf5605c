"""Byte-exact PDU layouts (RFC 7143 §11) and CRC32C vectors (RFC 3720 B.4)."""

from __future__ import annotations

import pytest

from bootinit.iscsi import pdu as P
from bootinit.iscsi.digest import crc32c, digest_of
from bootinit.iscsi.errors import PduFormatError


def hx(s: str) -> bytes:
    return bytes.fromhex("".join(s.split()))


def roundtrip(p: P.Pdu, **kw: bool) -> P.Pdu:
    out = P.decode_bytes(P.encode_bytes(p, **kw), **kw)
    assert out == p
    return out


# -- CRC32C (RFC 3720 Appendix B.4) -------------------------------------------


@pytest.mark.parametrize(
    ("data", "wire"),
    [
        (bytes(32), "aa 36 91 8a"),
        (b"\xff" * 32, "43 ab a8 62"),
        (bytes(range(32)), "4e 79 dd 46"),
        (bytes(range(31, -1, -1)), "5c db 3f 11"),
    ],
)
def test_crc32c_vectors(data: bytes, wire: str) -> None:
    assert digest_of(data) == hx(wire)
    assert digest_of(data[:7], data[7:]) == hx(wire)  # incremental


def test_rfc3720_read_pdu_vector() -> None:
    # The iSCSI SCSI Read (10) command PDU of RFC 3720 B.4, and its CRC 56 3a 96 d9.
    cmd = P.ScsiCommand(final=True, read=True, attr=0, itt=0x14000000, expected_length=0x400,
                        cmdsn=0x14, exp_statsn=0x18, cdb=hx("28 00 00 00 00 00 00 00 02 00"))
    wire = P.encode_bytes(cmd)
    assert wire == hx("""01 c0 00 00 00 00 00 00 00 00 00 00 00 00 00 00
                         14 00 00 00 00 00 04 00 00 00 00 14 00 00 00 18
                         28 00 00 00 00 00 00 00 02 00 00 00 00 00 00 00""")
    assert digest_of(wire) == hx("56 3a 96 d9")
    assert crc32c(wire) == 0xD9963A56
    with_digest = P.encode_bytes(cmd, header_digest=True)
    assert with_digest[48:] == hx("56 3a 96 d9")


# -- each opcode, byte-exact -----------------------------------------------------


def test_nop_out_layout() -> None:
    p = P.NopOut(immediate=True, lun=0, itt=0x11223344, ttt=0xFFFFFFFF, cmdsn=5, exp_statsn=9,
                 data=b"ping!")
    w = P.encode_bytes(p)
    assert w[:48] == hx("""40 80 00 00 00 00 00 05 00 00 00 00 00 00 00 00
                           11 22 33 44 ff ff ff ff 00 00 00 05 00 00 00 09""") + bytes(16)
    assert w[48:] == b"ping!\0\0\0"  # padded to 4
    roundtrip(p)


def test_scsi_command_write_with_immediate_data() -> None:
    p = P.ScsiCommand(final=True, write=True, attr=P.TaskAttr.SIMPLE, lun=0x0001000000000000,
                      itt=7, expected_length=4096, cmdsn=0xFFFFFFFF, exp_statsn=1,
                      cdb=hx("2a 00 00 00 00 10 00 00 08 00") + bytes(6), data=b"\xab" * 6)
    w = P.encode_bytes(p)
    assert w[0] == 0x01 and w[1] == 0xA1  # F|W, ATTR=1
    assert w[4] == 0 and w[5:8] == hx("00 00 06")
    assert w[8:16] == hx("00 01 00 00 00 00 00 00")
    assert w[20:24] == hx("00 00 10 00") and w[24:28] == hx("ff ff ff ff")
    assert w[32:48] == hx("2a 00 00 00 00 10 00 00 08 00") + bytes(6)
    assert len(w) == 48 + 8
    odd = P.ScsiCommand(cdb=bytes(17))  # 17-byte CDB: 1 extra byte, AHS padded to 8
    assert P.encode_bytes(odd)[48:56] == hx("00 02 01 00 00 00 00 00")
    roundtrip(p)


def test_scsi_command_extended_cdb_and_bidi_ahs() -> None:
    cdb = bytes(range(1, 33))  # 32-byte CDB
    p = P.ScsiCommand(read=True, write=True, itt=1, cdb=cdb, bidi_read_length=0x1234)
    w = P.encode_bytes(p)
    # Extended CDB AHS: AHSLength = 16 + 1 = 0x11, type 1, reserved, 16 bytes (20 in all);
    # bidi AHS: AHSLength 5, type 2, reserved, 4 bytes (8 in all).  7 words.
    assert w[4] == 7
    assert w[32:48] == cdb[:16]
    assert w[48:52] == hx("00 11 01 00") and w[52:68] == cdb[16:]
    assert w[68:76] == hx("00 05 02 00 00 00 12 34")
    assert len(w) == 76
    out = roundtrip(p)
    assert isinstance(out, P.ScsiCommand) and out.cdb == cdb


def test_scsi_command_cdb_shorter_than_16_roundtrips_padded() -> None:
    p = P.ScsiCommand(itt=1, cdb=bytes(6))
    out = P.decode_bytes(P.encode_bytes(p))
    assert isinstance(out, P.ScsiCommand) and out.cdb == bytes(16)


def test_scsi_response_layout_and_sense() -> None:
    sense = hx("70 00 05 00 00 00 00 0a 00 00 00 00 21 00 00 00 00 00")
    p = P.ScsiResponse(underflow=True, response=0, status=2, itt=0xA, snack_tag=0, statsn=3,
                       exp_cmdsn=4, max_cmdsn=0x13, exp_datasn=1, residual=512,
                       data=len(sense).to_bytes(2, "big") + sense)
    w = P.encode_bytes(p)
    assert w[:4] == hx("21 82 00 02")
    assert w[5:8] == hx("00 00 14")
    assert w[24:48] == hx("""00 00 00 03 00 00 00 04 00 00 00 13 00 00 00 01
                             00 00 00 00 00 00 02 00""")
    out = roundtrip(p)
    assert isinstance(out, P.ScsiResponse) and out.sense == sense


def test_scsi_response_bad_sense_length() -> None:
    p = P.ScsiResponse(data=b"\x00\x20abc")
    with pytest.raises(PduFormatError, match="SenseLength"):
        _ = p.sense


def test_task_mgmt_request_and_response() -> None:
    p = P.TaskMgmtRequest(immediate=True, function=P.TmfFunction.ABORT_TASK, lun=0, itt=9,
                          referenced_task_tag=5, cmdsn=7, exp_statsn=2, ref_cmdsn=6,
                          exp_datasn=3)
    w = P.encode_bytes(p)
    assert w[:4] == hx("42 81 00 00")
    assert w[16:40] == hx("00 00 00 09 00 00 00 05 00 00 00 07 00 00 00 02 00 00 00 06 "
                          "00 00 00 03")
    roundtrip(p)
    r = P.TaskMgmtResponse(response=P.TmfResponse.TASK_DOES_NOT_EXIST, itt=9, statsn=1,
                           exp_cmdsn=8, max_cmdsn=20)
    w = P.encode_bytes(r)
    assert w[:4] == hx("22 80 01 00")
    roundtrip(r)


def test_login_request_layout() -> None:
    p = P.LoginRequest(transit=True, csg=0, nsg=1, isid=hx("40 01 02 03 00 07"), tsih=0,
                       itt=0, cid=0x0102, cmdsn=0x10, exp_statsn=0, data=b"A=B\0")
    w = P.encode_bytes(p)
    assert w[:8] == hx("43 81 00 00 00 00 00 04")
    assert w[8:16] == hx("40 01 02 03 00 07 00 00")
    assert w[20:24] == hx("01 02 00 00")
    assert w[24:28] == hx("00 00 00 10")
    roundtrip(p)


def test_login_response_layout() -> None:
    p = P.LoginResponse(transit=True, csg=1, nsg=3, isid=hx("40 01 02 03 00 07"), tsih=0x2A,
                        itt=0, statsn=100, exp_cmdsn=16, max_cmdsn=31, status_class=2,
                        status_detail=1)
    w = P.encode_bytes(p)
    assert w[:4] == hx("23 87 00 00")
    assert w[14:16] == hx("00 2a")
    assert w[36:38] == hx("02 01")
    roundtrip(p)


def test_login_response_t_and_c_rejected() -> None:
    w = bytearray(P.encode_bytes(P.LoginResponse()))
    w[1] = 0xC0
    with pytest.raises(PduFormatError, match="T and C"):
        P.decode_bytes(bytes(w))


def test_text_request_response() -> None:
    p = P.TextRequest(final=False, cont=True, itt=3, ttt=0xFFFFFFFF, cmdsn=1, exp_statsn=2,
                      data=b"SendTargets=All\0")
    w = P.encode_bytes(p)
    assert w[:4] == hx("04 40 00 00")
    roundtrip(p)
    r = P.TextResponse(final=False, cont=True, itt=3, ttt=0x99, statsn=5, exp_cmdsn=2,
                       max_cmdsn=3, data=b"TargetName=iqn.x\0")
    assert P.encode_bytes(r)[:4] == hx("24 40 00 00")
    roundtrip(r)


def test_data_out_layout() -> None:
    payload = memoryview(bytearray(b"0123456789"))
    p = P.DataOut(final=True, lun=0, itt=5, ttt=0x77, exp_statsn=8, datasn=2,
                  buffer_offset=8192, data=payload[2:7])
    parts = P.encode(p)
    assert parts[1] is p.data  # the data segment is referenced, not copied
    w = b"".join(parts)
    assert w[:8] == hx("05 80 00 00 00 00 00 05")
    assert w[36:48] == hx("00 00 00 02 00 00 20 00 00 00 00 00")
    assert w[48:] == b"23456\0\0\0"


def test_data_in_layout() -> None:
    p = P.DataIn(final=True, status_present=True, status=0, underflow=True, itt=5, ttt=0xFFFFFFFF,
                 statsn=7, exp_cmdsn=8, max_cmdsn=9, datasn=0, buffer_offset=0, residual=100,
                 data=b"xyzw")
    w = P.encode_bytes(p)
    assert w[:4] == hx("25 83 00 00")
    assert w[44:48] == hx("00 00 00 64")
    out = roundtrip(p)
    assert isinstance(out, P.DataIn) and out.segment_length == 4 and not out.placed


def test_data_in_s_without_f_rejected() -> None:
    w = bytearray(P.encode_bytes(P.DataIn(itt=1)))
    w[1] = 0x01
    with pytest.raises(PduFormatError, match="S set without F"):
        P.decode_bytes(bytes(w))


def test_logout_request_response() -> None:
    p = P.LogoutRequest(immediate=True, reason=P.LogoutReason.CLOSE_CONNECTION, itt=4, cid=1,
                        cmdsn=10, exp_statsn=11)
    w = P.encode_bytes(p)
    assert w[:4] == hx("46 81 00 00") and w[20:22] == hx("00 01")
    roundtrip(p)
    r = P.LogoutResponse(response=0, itt=4, statsn=11, exp_cmdsn=11, max_cmdsn=20, time2wait=2,
                         time2retain=20)
    w = P.encode_bytes(r)
    assert w[:4] == hx("26 80 00 00") and w[40:44] == hx("00 02 00 14")
    roundtrip(r)


def test_snack_layout() -> None:
    p = P.SnackRequest(type=P.SnackType.DATA_R2T, itt=5, ttt_or_snack_tag=0xFFFFFFFF,
                       exp_statsn=3, begrun=4, runlength=2)
    w = P.encode_bytes(p)
    assert w[:4] == hx("10 80 00 00")
    assert w[40:48] == hx("00 00 00 04 00 00 00 02")
    roundtrip(p)


def test_r2t_layout() -> None:
    p = P.R2T(lun=0, itt=5, ttt=0x1000, statsn=2, exp_cmdsn=3, max_cmdsn=4, r2tsn=1,
              buffer_offset=65536, desired_length=262144)
    w = P.encode_bytes(p)
    assert w[:4] == hx("31 80 00 00")
    assert w[36:48] == hx("00 00 00 01 00 01 00 00 00 04 00 00")
    roundtrip(p)


def test_r2t_with_reserved_ttt_rejected() -> None:
    w = P.encode_bytes(P.R2T(ttt=0xFFFFFFFF))
    with pytest.raises(PduFormatError, match="TargetTransferTag"):
        P.decode_bytes(w)


def test_async_message_layout() -> None:
    p = P.AsyncMessage(lun=0, statsn=1, exp_cmdsn=2, max_cmdsn=3,
                       event=P.AsyncEvent.LOGOUT_REQUEST, vcode=0, parameter1=0,
                       parameter2=0, parameter3=5)
    w = P.encode_bytes(p)
    assert w[:4] == hx("32 80 00 00") and w[16:20] == hx("ff ff ff ff")
    assert w[36:44] == hx("01 00 00 00 00 00 00 05")
    roundtrip(p)
    ua = hx("70 00 06 00 00 00 00 0a 00 00 00 00 3f 0e 00 00 00 00")
    ev = P.AsyncMessage(event=P.AsyncEvent.SCSI_EVENT, data=b"\x00\x12" + ua)
    assert ev.sense == ua


def test_reject_layout() -> None:
    bad = P.encode_bytes(P.NopOut(itt=0x1234))
    p = P.Reject(reason=P.RejectReason.PROTOCOL_ERROR, statsn=1, exp_cmdsn=2, max_cmdsn=3,
                 data=bad[:48])
    w = P.encode_bytes(p)
    assert w[:4] == hx("3f 80 04 00") and w[16:20] == hx("ff ff ff ff")
    out = roundtrip(p)
    assert isinstance(out, P.Reject) and out.rejected_itt == 0x1234


def test_nop_in_roundtrip() -> None:
    p = P.NopIn(itt=0xFFFFFFFF, ttt=0x55, statsn=9, exp_cmdsn=1, max_cmdsn=2)
    assert P.encode_bytes(p)[:4] == hx("20 80 00 00")
    roundtrip(p)


def test_every_opcode_roundtrips_with_digests() -> None:
    for cls in P.PDU_CLASSES.values():
        kw: dict[str, object] = {}
        if cls is P.ScsiCommand:
            kw["cdb"] = bytes(16)
        if cls is P.R2T:
            kw["ttt"] = 1
        else:
            kw["data"] = b"abcde"
        p = cls(**kw)  # type: ignore[arg-type]
        roundtrip(p, header_digest=True, data_digest=True)


def test_unknown_opcode() -> None:
    w = bytearray(48)
    w[0] = 0x3E
    with pytest.raises(PduFormatError, match="0x3e"):
        P.decode(bytes(w))


def test_invalid_isid_length() -> None:
    with pytest.raises(PduFormatError, match="ISID"):
        P.encode(P.LoginRequest(isid=b"\x40"))


def test_cdb_too_long() -> None:
    with pytest.raises(PduFormatError, match="CDB"):
        P.encode(P.ScsiCommand(cdb=bytes(2000)))
