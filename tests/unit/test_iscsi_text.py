"""SendTargets and TargetAddress parsing (RFC 7143 §11.10/§11.11, §13.3, §13.8, App. C)."""

from __future__ import annotations

import pytest

from bootinit.iscsi.errors import KeyFormatError, ProtocolError
from bootinit.iscsi.keys import encode_text
from bootinit.iscsi.pdu import RESERVED_TAG, TextRequest, TextResponse, decode_bytes, encode_bytes
from bootinit.iscsi.text import (
    Portal,
    SendTargets,
    TextExchange,
    parse_portal,
    parse_send_targets,
)


@pytest.mark.parametrize(
    ("value", "portal"),
    [
        ("10.0.0.1:3260,1", Portal("10.0.0.1", 3260, 1)),
        ("10.0.0.1", Portal("10.0.0.1", 3260, None)),
        ("10.0.0.1,7", Portal("10.0.0.1", 3260, 7)),
        ("[fe80::1]:3260,1", Portal("fe80::1", 3260, 1)),
        ("[2001:db8::5]", Portal("2001:db8::5", 3260, None)),
        ("[fe80::1%eth0]:860,2", Portal("fe80::1%eth0", 860, 2)),
        ("storage.example.com:3261,65535", Portal("storage.example.com", 3261, 65535)),
    ],
)
def test_parse_portal(value: str, portal: Portal) -> None:
    assert parse_portal(value) == portal


@pytest.mark.parametrize(
    "value",
    ["10.0.0.1:0", "10.0.0.1:70000", "10.0.0.1:x", "fe80::1", "[fe80::1", "[zz::1]:3260",
     "10.0.0.1,abc", "10.0.0.1,70000", "999.1.1.1", ":3260", "[fe80::1]x", "bad_host!"],
)
def test_bad_portals(value: str) -> None:
    with pytest.raises(KeyFormatError, match="TargetAddress"):
        parse_portal(value)


def test_portal_str() -> None:
    assert str(Portal("fe80::1", 3260, 1)) == "[fe80::1]:3260,1"
    assert str(Portal("10.0.0.1")) == "10.0.0.1:3260"


def test_parse_send_targets() -> None:
    pairs = [
        ("TargetName", "iqn.2001-04.com.example:storage.disk1"),
        ("TargetAddress", "10.0.0.1:3260,1"),
        ("TargetAddress", "[fe80::1]:3260,1"),
        ("TargetName", "iqn.2001-04.com.example:storage.disk2"),
        ("TargetAddress", "10.0.0.2:3260,2"),
        ("TargetName", "iqn.2001-04.com.example:noaddr"),
    ]
    targets = parse_send_targets(pairs)
    assert [t.name for t in targets] == ["iqn.2001-04.com.example:storage.disk1",
                                         "iqn.2001-04.com.example:storage.disk2",
                                         "iqn.2001-04.com.example:noaddr"]
    assert targets[0].portals == (Portal("10.0.0.1", 3260, 1), Portal("fe80::1", 3260, 1))
    assert targets[2].portals == ()


def test_address_before_name() -> None:
    with pytest.raises(KeyFormatError, match="before any TargetName"):
        parse_send_targets([("TargetAddress", "10.0.0.1")])


def wire(p: TextResponse) -> TextResponse:
    out = decode_bytes(encode_bytes(p))
    assert isinstance(out, TextResponse)
    return out


def test_send_targets_single_pdu() -> None:
    st = SendTargets(itt=5)
    req = st.first_request()
    assert req.final and not req.cont and req.ttt == RESERVED_TAG and req.itt == 5
    assert bytes(req.data) == b"SendTargets=All\0"
    data = encode_text([("TargetName", "iqn.a"), ("TargetAddress", "10.0.0.1:3260,1")])
    out = st.receive_targets(wire(TextResponse(itt=5, final=True, data=data)))
    assert isinstance(out, list) and out[0].name == "iqn.a"


def test_send_targets_continuation() -> None:
    st = SendTargets(itt=5)
    st.first_request()
    data = encode_text([(k, v) for i in range(50) for k, v in
                        (("TargetName", f"iqn.2001-04.com.example:t{i}"),
                         ("TargetAddress", f"10.0.{i}.1:3260,1"))])
    parts = [data[i:i + 300] for i in range(0, len(data), 300)]
    for p in parts[:-1]:
        nxt = st.receive_targets(wire(TextResponse(itt=5, final=False, cont=True, ttt=0x42,
                                                   data=p)))
        assert isinstance(nxt, TextRequest)
        assert nxt.ttt == 0x42 and nxt.final and not nxt.data
    out = st.receive_targets(wire(TextResponse(itt=5, final=True, ttt=RESERVED_TAG,
                                               data=parts[-1])))
    assert isinstance(out, list) and len(out) == 50
    assert out[49].portals[0].host == "10.0.49.1"
    with pytest.raises(ProtocolError):
        st.receive(TextResponse(itt=5))


def test_f0_without_c_then_more() -> None:
    st = SendTargets(itt=1)
    st.first_request()
    nxt = st.receive(TextResponse(itt=1, final=False, ttt=9,
                                  data=encode_text([("TargetName", "iqn.a")])))
    assert isinstance(nxt, TextRequest)
    out = st.receive_targets(TextResponse(itt=1, final=True,
                                          data=encode_text([("TargetName", "iqn.b")])))
    assert isinstance(out, list) and [t.name for t in out] == ["iqn.a", "iqn.b"]


def test_our_request_continued() -> None:
    ex = TextExchange([("X-long", "v" * 250)] * 3, itt=3, max_data=512)
    first = ex.first_request()
    assert first.cont and not first.final and len(first.data) == 512
    nxt = ex.receive(TextResponse(itt=3, final=False, ttt=7))
    assert isinstance(nxt, TextRequest) and not nxt.cont and nxt.final and nxt.ttt == 7
    out = ex.receive(TextResponse(itt=3, final=True, data=b"X-long=NotUnderstood\0"))
    assert out == [("X-long", "NotUnderstood")]


def test_wrong_itt_and_missing_ttt() -> None:
    st = SendTargets(itt=1)
    st.first_request()
    with pytest.raises(ProtocolError, match="ITT"):
        st.receive(TextResponse(itt=2))
    with pytest.raises(ProtocolError, match="TTT"):
        st.receive(TextResponse(itt=1, final=False, cont=True, ttt=RESERVED_TAG, data=b"a"))
