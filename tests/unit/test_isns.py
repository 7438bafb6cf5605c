"""The pure iSNSP codec and client (RFC 4171)."""

from __future__ import annotations

import struct

import pytest

from bootinit.iscsi.text import Portal
from bootinit.isns import (
    HEADER_LEN,
    NODE_INITIATOR,
    NODE_TARGET,
    Attribute,
    Flags,
    FunctionId,
    IsnsClient,
    IsnsError,
    IsnsMessage,
    IsnsStatusError,
    MessageReader,
    PduHeader,
    Status,
    Tag,
    decode_attributes,
    encode_attributes,
    encode_message,
    parse_server,
    targets_from_query,
)

ME = "iqn.2026-11.org.bootinit:me"
T1 = "iqn.2024-01.org.bootinit:t1"
T2 = "iqn.2024-01.org.bootinit:t2"


def test_attribute_encodings() -> None:
    s = Attribute.string(Tag.ISCSI_NAME, "abc")
    assert s.value == b"abc\0" and s.as_string() == "abc"
    s = Attribute.string(Tag.ISCSI_NAME, "abcd")  # NUL terminated, padded to 4
    assert s.value == b"abcd\0\0\0\0"
    assert Attribute.uint32(Tag.ISCSI_NODE_TYPE, 1).encode() == struct.pack(">III", 33, 4, 1)
    ip = Attribute.ip(Tag.PORTAL_IP_ADDRESS, "10.1.2.3")
    assert ip.value == bytes(10) + b"\xff\xff\x0a\x01\x02\x03" and ip.as_ip() == "10.1.2.3"
    assert Attribute.ip(Tag.PORTAL_IP_ADDRESS, "fe80::1").as_ip() == "fe80::1"
    assert Attribute.port(Tag.PORTAL_PORT, 3260).as_port() == (3260, False)
    assert Attribute.port(Tag.PORTAL_PORT, 3205, udp=True).as_port() == (3205, True)
    assert Attribute.empty(Tag.PG_TAG).encode() == struct.pack(">II", 51, 0)
    assert "iscsi_name='abc'" in Attribute.string(Tag.ISCSI_NAME, "abc").describe()


def test_attributes_round_trip_and_truncation() -> None:
    attrs = [Attribute.string(Tag.ISCSI_NAME, ME), Attribute(Tag.DELIMITER),
             Attribute.uint32(Tag.ISCSI_NODE_TYPE, NODE_TARGET)]
    raw = encode_attributes(attrs)
    assert decode_attributes(raw) == attrs
    with pytest.raises(IsnsError, match="truncated"):
        decode_attributes(raw[:-6])
    with pytest.raises(IsnsError, match="bad length"):
        decode_attributes(struct.pack(">II", 32, 5) + b"abcde")
    with pytest.raises(IsnsError, match="expected 4"):
        Attribute(Tag.ISCSI_NODE_TYPE, b"\0" * 8).as_uint32()


def test_header_and_version() -> None:
    h = PduHeader(FunctionId.DevAttrQry, 16, Flags.CLIENT | Flags.FIRST_PDU, 7, 0)
    raw = h.encode()
    assert len(raw) == HEADER_LEN and raw[:2] == b"\x00\x01"
    assert PduHeader.decode(raw) == h
    with pytest.raises(IsnsError, match="version"):
        PduHeader.decode(b"\x00\x02" + raw[2:])


def test_message_split_over_pdus_and_reassembled_in_any_chunking() -> None:
    payload = encode_attributes([Attribute.string(Tag.ISCSI_NAME, "x" * 50)] * 10)
    wire = encode_message(FunctionId.DevAttrQry, 9, payload, max_payload=64)
    reader = MessageReader()
    got: list[IsnsMessage] = []
    for i in range(0, len(wire), 7):
        got += reader.feed(wire[i:i + 7])
    assert len(got) == 1
    assert got[0].payload == payload and got[0].xid == 9 and not got[0].is_response
    first = PduHeader.decode(wire)
    assert first.flags & Flags.FIRST_PDU and not first.flags & Flags.LAST_PDU


def test_reader_rejects_out_of_sequence_pdus() -> None:
    wire = encode_message(FunctionId.DevAttrQry, 3, b"\0" * 128, max_payload=64)
    second = wire[HEADER_LEN + 64:]
    with pytest.raises(IsnsError, match="without a first PDU"):
        MessageReader().feed(second)


def _response(function: int, xid: int, status: int, attrs: list[Attribute]) -> bytes:
    return encode_message(function | 0x8000, xid,
                          struct.pack(">I", status) + encode_attributes(attrs),
                          flags=Flags.SERVER)


def test_client_requests_carry_source_key_and_operating_attributes() -> None:
    c = IsnsClient(ME)
    reg = MessageReader().feed(c.register([("10.0.0.2", 3260)]))[0]
    assert reg.function == FunctionId.DevAttrReg
    tags = [a.tag for a in reg.attributes]
    assert tags[:3] == [Tag.ISCSI_NAME, Tag.ENTITY_IDENTIFIER, Tag.DELIMITER]
    assert Tag.PORTAL_IP_ADDRESS in tags
    node_type = next(a for a in reg.attributes if a.tag == Tag.ISCSI_NODE_TYPE)
    assert node_type.as_uint32() == NODE_INITIATOR
    q = MessageReader().feed(c.query_targets())[0]
    assert q.function == FunctionId.DevAttrQry
    assert q.attributes[0].as_string() == ME            # source
    assert q.attributes[1].as_uint32() == NODE_TARGET   # key: Node Type = Target
    assert q.attributes[2].tag == Tag.DELIMITER
    assert all(not a.value for a in q.attributes[3:])   # operating: what to return
    d = MessageReader().feed(c.deregister())[0]
    assert d.function == FunctionId.DevDereg
    assert set(c.pending.values()) == {FunctionId.DevAttrReg, FunctionId.DevAttrQry,
                                       FunctionId.DevDereg}


def test_client_matches_responses_and_ignores_others() -> None:
    c = IsnsClient(ME)
    c.query_targets()
    xid = next(iter(c.pending))
    stray = encode_message(FunctionId.SCN, 77, b"", flags=Flags.SERVER)
    ok = _response(FunctionId.DevAttrQry, xid, 0, [])
    got = c.feed(stray + ok)
    assert len(got) == 1 and got[0].status == 0 and not c.pending


def test_status_error_is_named() -> None:
    c = IsnsClient(ME)
    c.query_targets()
    xid = next(iter(c.pending))
    msg = c.feed(_response(FunctionId.DevAttrQry, xid, Status.SOURCE_UNKNOWN, []))[0]
    with pytest.raises(IsnsStatusError, match="source unknown") as ei:
        msg.check()
    assert ei.value.status == 6


def _query_answer(attrs: list[Attribute]) -> IsnsMessage:
    raw = _response(FunctionId.DevAttrQry, 1, 0,
                    [Attribute.uint32(Tag.ISCSI_NODE_TYPE, NODE_TARGET),
                     Attribute(Tag.DELIMITER), *attrs])
    return MessageReader().feed(raw)[0]


def _node(name: str, kind: int = NODE_TARGET) -> list[Attribute]:
    return [Attribute.string(Tag.ISCSI_NAME, name), Attribute.uint32(Tag.ISCSI_NODE_TYPE, kind)]


def _portal(ip: str, port: int = 3260) -> list[Attribute]:
    return [Attribute.ip(Tag.PORTAL_IP_ADDRESS, ip), Attribute.port(Tag.PORTAL_PORT, port)]


def _pg(name: str, ip: str, tag: int | None, port: int = 3260) -> list[Attribute]:
    return [Attribute.string(Tag.PG_ISCSI_NAME, name), Attribute.ip(Tag.PG_PORTAL_IP_ADDR, ip),
            Attribute.port(Tag.PG_PORTAL_PORT, port),
            Attribute.uint32(Tag.PG_TAG, tag) if tag is not None else Attribute(Tag.PG_TAG)]


def test_targets_from_query_with_portal_groups() -> None:
    # what open-isns answers for tgtd: per node its portal, then its portal group
    msg = _query_answer([*_node(T1), *_portal("10.0.0.1"), *_pg(T1, "10.0.0.1", 1),
                         *_pg(T1, "10.0.0.3", 2),
                         *_node(T2), *_portal("10.0.0.1"), *_pg(T2, "10.0.0.1", 1),
                         *_pg(T2, "10.0.0.9", None),        # not associated
                         *_node(ME, NODE_INITIATOR)])
    got = targets_from_query(msg, exclude=ME)
    assert [t.name for t in got] == [T1, T2]
    assert got[0].portals == (Portal("10.0.0.1", 3260, 1), Portal("10.0.0.3", 3260, 2))
    assert got[1].portals == (Portal("10.0.0.1", 3260, 1),)


def test_targets_from_query_without_portal_groups_uses_the_entity_portals() -> None:
    msg = _query_answer([*_portal("10.0.0.5", 3261), *_node(T1),
                         Attribute(Tag.ENTITY_IDENTIFIER, b"e2\0\0"),
                         *_portal("10.0.0.6"), *_node(T2)])
    got = targets_from_query(msg)
    assert got[0].portals == (Portal("10.0.0.5", 3261),)
    assert got[1].portals == (Portal("10.0.0.6", 3260),)


def test_targets_from_query_raises_the_status() -> None:
    raw = _response(FunctionId.DevAttrQry, 1, Status.SOURCE_UNAUTHORIZED, [])
    with pytest.raises(IsnsStatusError):
        targets_from_query(MessageReader().feed(raw)[0])


def test_parse_server() -> None:
    assert parse_server("10.0.0.1") == ("10.0.0.1", 3205)
    assert parse_server("10.0.0.1:4000") == ("10.0.0.1", 4000)
    assert parse_server("[fe80::1]:3205") == ("fe80::1", 3205)
    for bad in ("isns.example", "10.0.0.1:x", "10.0.0.1:0", "[fe80::1"):
        with pytest.raises(ValueError):
            parse_server(bad)
