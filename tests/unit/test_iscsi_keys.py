"""Text keys (RFC 7143 §6.1) and negotiation rules (§6.2, §13)."""

from __future__ import annotations

import pytest

from bootinit.iscsi.errors import KeyFormatError, NegotiationError
from bootinit.iscsi.keys import (
    KEYS,
    KeyType,
    Negotiator,
    OperationalConfig,
    Phase,
    Rule,
    Scope,
    TextAssembler,
    decode_text,
    encode_text,
    parse_number,
    split_text,
    with_params,
)


def test_encode_decode() -> None:
    pairs = [("InitiatorName", "iqn.2024-01.org.example:boot"), ("AuthMethod", "CHAP,None")]
    raw = encode_text(pairs)
    assert raw == b"InitiatorName=iqn.2024-01.org.example:boot\0AuthMethod=CHAP,None\0"
    assert decode_text(raw) == pairs


def test_empty_value_and_repeats_kept() -> None:
    raw = b"TargetAlias=\0TargetAddress=a\0TargetAddress=b\0"
    assert decode_text(raw) == [("TargetAlias", ""), ("TargetAddress", "a"),
                                ("TargetAddress", "b")]


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        (b"NoEquals\0", "missing '='"),
        (b"=value\0", "empty key"),
        (b"K" * 64 + b"=1\0", "longer than 63"),
        (b"Bad Key=1\0", "invalid character"),
        (b"Key=1", "not NUL-terminated"),
        (b"TargetAlias=" + b"a" * 256 + b"\0", "longer than 255"),
        (b"TargetAlias=\xff\xfe\0", "not UTF-8"),
        (b"K\xe9y=1\0", "not ASCII"),
    ],
)
def test_garbage_rejected(raw: bytes, match: str) -> None:
    with pytest.raises(KeyFormatError, match=match):
        decode_text(raw)


def test_long_values_allowed_for_chap() -> None:
    raw = b"CHAP_C=0x" + b"ab" * 1024 + b"\0"
    assert decode_text(raw)[0][0] == "CHAP_C"
    with pytest.raises(KeyFormatError, match="8192"):
        decode_text(b"CHAP_C=" + b"a" * 8193 + b"\0")


def test_chap_values_never_in_errors() -> None:
    with pytest.raises(KeyFormatError) as ei:
        decode_text(b"CHAP_R=" + b"s3cr3t" * 2000 + b"\0")
    assert "s3cr3t" not in str(ei.value)


def test_assembler_split_inside_pair() -> None:
    raw = encode_text([("TargetName", "iqn.a"), ("TargetAddress", "10.0.0.1:3260,1")])
    asm = TextAssembler()
    parts = split_text(raw, 7)
    for p in parts[:-1]:
        assert asm.add(p, True) is None
    assert asm.add(parts[-1], False) == decode_text(raw)
    assert not asm.in_progress


def test_assembler_limit() -> None:
    asm = TextAssembler(limit=10)
    with pytest.raises(KeyFormatError, match="exceeds 10"):
        asm.add(b"x" * 11, True)


def test_table_rows() -> None:
    mrdsl = KEYS["MaxRecvDataSegmentLength"]
    assert mrdsl.rule is Rule.DECLARATIVE and mrdsl.scope is Scope.CONNECTION
    assert mrdsl.default == "8192" and mrdsl.low == 512 and mrdsl.high == 2**24 - 1
    assert KEYS["InitialR2T"].rule is Rule.OR and KEYS["ImmediateData"].rule is Rule.AND
    assert KEYS["MaxBurstLength"].rule is Rule.MIN
    assert KEYS["DefaultTime2Wait"].rule is Rule.MAX
    assert KEYS["HeaderDigest"].type is KeyType.LIST
    assert KEYS["AuthMethod"].phase is Phase.SECURITY
    assert KEYS["ErrorRecoveryLevel"].high == 2
    assert KEYS["DefaultTime2Retain"].default == "20"


def test_parse_number() -> None:
    assert parse_number("MaxBurstLength", "0x1000") == 4096
    with pytest.raises(NegotiationError):
        parse_number("MaxBurstLength", "12abc")
    with pytest.raises(NegotiationError, match="outside"):
        parse_number("MaxBurstLength", "100")


def _neg(**kw: object) -> Negotiator:
    return Negotiator(OperationalConfig(**kw))  # type: ignore[arg-type]


def test_offer_contents() -> None:
    n = _neg(header_digest=("CRC32C", "None"))
    offer = dict(n.offer())
    assert offer["HeaderDigest"] == "CRC32C,None"
    assert offer["MaxRecvDataSegmentLength"] == "262144"
    assert offer["InitialR2T"] == "No" and offer["ImmediateData"] == "Yes"
    assert "MaxRecvDataSegmentLength" not in n.awaiting  # declarative: no answer due
    assert "MaxBurstLength" in n.awaiting


def test_discovery_offer_leaves_out_irrelevant_keys() -> None:
    n = Negotiator(OperationalConfig(), discovery=True)
    keys = dict(n.offer())
    assert "MaxBurstLength" not in keys and "InitialR2T" not in keys
    assert "HeaderDigest" in keys and "MaxRecvDataSegmentLength" in keys


def test_typical_tgtd_answer() -> None:
    n = _neg()
    n.offer()
    answers = n.receive([
        ("HeaderDigest", "None"), ("DataDigest", "None"), ("MaxConnections", "1"),
        ("InitialR2T", "Yes"), ("ImmediateData", "Yes"), ("MaxRecvDataSegmentLength", "8192"),
        ("MaxBurstLength", "262144"), ("FirstBurstLength", "65536"),
        ("DefaultTime2Wait", "2"), ("DefaultTime2Retain", "0"), ("MaxOutstandingR2T", "1"),
        ("DataPDUInOrder", "Yes"), ("DataSequenceInOrder", "Yes"), ("ErrorRecoveryLevel", "0"),
        ("TargetAlias", "disk1"), ("TargetPortalGroupTag", "1"),
    ])
    assert answers == []
    r = n.result()
    assert r.initial_r2t is True and r.immediate_data is True
    assert r.max_recv_data_segment_length == 262144  # ours
    assert r.max_xmit_data_segment_length == 8192  # theirs
    assert r.max_burst_length == 262144 and r.first_burst_length == 65536
    assert r.default_time2retain == 0
    assert r.target_alias == "disk1" and r.target_portal_group_tag == 1
    assert r.unanswered == ()
    assert r.first_burst_applies


def test_target_declares_no_mrdsl_gives_8192() -> None:
    n = _neg()
    n.offer()
    assert n.result().max_xmit_data_segment_length == 8192


def test_min_rule_violation() -> None:
    n = _neg(max_burst_length=65536, first_burst_length=65536)
    n.offer()
    with pytest.raises(NegotiationError, match="MaxBurstLength"):
        n.receive([("MaxBurstLength", "131072")])


def test_max_rule_violation() -> None:
    n = _neg(default_time2wait=5)
    n.offer()
    with pytest.raises(NegotiationError, match="DefaultTime2Wait"):
        n.receive([("DefaultTime2Wait", "2")])


def test_boolean_rules() -> None:
    n = _neg(initial_r2t=True, immediate_data=False)
    n.offer()
    with pytest.raises(NegotiationError, match="OR result"):
        n.receive([("InitialR2T", "No")])
    with pytest.raises(NegotiationError, match="AND result"):
        n.receive([("ImmediateData", "Yes")])
    with pytest.raises(NegotiationError, match="Yes or No"):
        n.receive([("DataPDUInOrder", "Maybe")])


def test_optional_answers_for_and_no_or_yes() -> None:
    n = _neg(initial_r2t=True, immediate_data=False)
    n.offer()
    r = n.result()
    assert r.initial_r2t is True and r.immediate_data is False
    assert "InitialR2T" not in r.unanswered and "ImmediateData" not in r.unanswered
    assert "MaxBurstLength" in r.unanswered
    assert not r.first_burst_applies


def test_list_answer_must_be_offered() -> None:
    n = _neg(header_digest=("None",))
    n.offer()
    with pytest.raises(NegotiationError, match="HeaderDigest"):
        n.receive([("HeaderDigest", "CRC32C")])


def test_digests_negotiated() -> None:
    n = _neg(header_digest=("CRC32C", "None"), data_digest=("CRC32C", "None"))
    n.offer()
    n.receive([("HeaderDigest", "CRC32C"), ("DataDigest", "None")])
    r = n.result()
    assert r.header_digest and not r.data_digest


def test_reject_and_notunderstood_give_default() -> None:
    n = _neg(header_digest=("CRC32C", "None"), max_burst_length=1048576)
    n.offer()
    n.receive([("HeaderDigest", "Reject"), ("MaxBurstLength", "NotUnderstood"),
               ("ErrorRecoveryLevel", "Irrelevant")])
    r = n.result()
    assert not r.header_digest and r.max_burst_length == 262144
    assert r.error_recovery_level == 0


def test_required_digest_refused() -> None:
    n = _neg(header_digest=("CRC32C",))
    n.offer()
    with pytest.raises(NegotiationError, match="required"):
        n.receive([("HeaderDigest", "Reject")])
    n2 = _neg(data_digest=("CRC32C",))
    n2.offer()
    with pytest.raises(NegotiationError, match="digests"):
        n2.result()


def test_target_initiated_keys_are_answered() -> None:
    n = Negotiator(OperationalConfig())
    answers = n.receive([
        ("MaxBurstLength", "131072"),  # MIN with our 16776192
        ("DefaultTime2Wait", "1"),  # MAX with our 2
        ("HeaderDigest", "CRC32C,None"),  # we only take None
        ("DataPDUInOrder", "No"),  # OR with our Yes
        ("X-com.example.Foo", "bar"),
        ("OFMarker", "No"),
        ("IFMarkInt", "2048~8192"),
        ("MaxConnections", "many"),
        ("InitiatorName", "iqn.bogus"),
    ])
    assert answers == [
        ("MaxBurstLength", "131072"), ("DefaultTime2Wait", "2"), ("HeaderDigest", "None"),
        ("DataPDUInOrder", "Yes"), ("X-com.example.Foo", "NotUnderstood"), ("OFMarker", "No"),
        ("MaxConnections", "Reject"),
    ]
    r = n.result()
    assert r.max_burst_length == 131072 and r.default_time2wait == 2
    assert r.extra == {"X-com.example.Foo": "bar"}


def test_discovery_irrelevant_target_offer() -> None:
    n = Negotiator(OperationalConfig(), discovery=True)
    assert n.receive([("MaxBurstLength", "1024")]) == [("MaxBurstLength", "Irrelevant")]


def test_first_burst_above_max_burst() -> None:
    n = _neg()
    n.offer()
    n.receive([("MaxBurstLength", "65536"), ("FirstBurstLength", "131072")])
    with pytest.raises(NegotiationError, match="FirstBurstLength"):
        n.result()


def test_config_validation() -> None:
    with pytest.raises(NegotiationError, match="MaxRecvDataSegmentLength"):
        OperationalConfig(max_recv_data_segment_length=100)
    with pytest.raises(NegotiationError, match="FirstBurstLength"):
        OperationalConfig(first_burst_length=2048, max_burst_length=1024)
    with pytest.raises(NegotiationError, match="HeaderDigest"):
        OperationalConfig(header_digest=("CRC64",))


def test_security_key_outside_security_stage() -> None:
    with pytest.raises(NegotiationError, match="security"):
        _neg().receive([("CHAP_A", "5")])


def test_target_addresses_collected() -> None:
    n = _neg()
    n.receive([("TargetAddress", "10.0.0.1:3260,1"), ("TargetAddress", "[fe80::1]:3260,1")])
    assert n.result().target_addresses == ("10.0.0.1:3260,1", "[fe80::1]:3260,1")


def test_user_params_set_the_offer() -> None:
    """``with_params`` (the CLI's ``--iscsi-param``): RFC 7143 §6.1 value forms, only the
    settable keys, ranges and FirstBurstLength <= MaxBurstLength checked, each error
    naming the key and value."""
    base = OperationalConfig()
    op = with_params(base, ["MaxRecvDataSegmentLength=0x100000", " ImmediateData = No",
                            "InitialR2T=Yes", "MaxBurstLength=1048576",
                            "FirstBurstLength=65536", "DefaultTime2Wait=0"])
    assert (op.max_recv_data_segment_length, op.immediate_data, op.initial_r2t,
            op.max_burst_length, op.first_burst_length, op.default_time2wait) == \
        (1 << 20, False, True, 1 << 20, 65536, 0)
    assert op.value("MaxRecvDataSegmentLength") == "1048576"
    assert op.value("ImmediateData") == "No"
    assert with_params(base, []) is base
    for bad, key, why in (
            (["MaxConnections=2"], "MaxConnections", "not a key that can be set"),
            (["HeaderDigest=CRC32C"], "HeaderDigest", "not a key that can be set"),
            (["MaxRecvDataSegmentLength=big"], "MaxRecvDataSegmentLength", "not a number"),
            (["MaxRecvDataSegmentLength=100"], "MaxRecvDataSegmentLength", "outside"),
            (["ImmediateData=yes"], "ImmediateData", "not Yes or No"),
            (["FirstBurstLength=1048576", "MaxBurstLength=65536"], "FirstBurstLength",
             "exceeds MaxBurstLength"),
            (["MaxBurstLength"], "MaxBurstLength", "expected KEY=VALUE")):
        with pytest.raises(NegotiationError) as ei:
            with_params(base, bad)
        assert ei.value.key == key and why in str(ei.value), (bad, str(ei.value))
