"""The login state machine driven by scripted target responses (RFC 7143 §6, §11.12/13)."""

from __future__ import annotations

import hashlib

import pytest

from bootinit.iscsi.chap import ChapAlgorithm, ChapCredentials, Secret, encode_hex
from bootinit.iscsi.errors import (
    AuthenticationError,
    LoginError,
    LoginInitiatorError,
    LoginTargetError,
    ProtocolError,
)
from bootinit.iscsi.keys import decode_text, encode_text
from bootinit.iscsi.login import (
    LoginConfig,
    LoginMachine,
    LoginRedirect,
    LoginSuccess,
    login_error,
    random_isid,
)
from bootinit.iscsi.pdu import LoginRequest, LoginResponse, Stage, decode_bytes, encode_bytes

TARGET = "iqn.2003-01.org.linux-iscsi.target:disk1"
INITIATOR = "iqn.2024-01.org.example:bootinit"
CHALLENGE = bytes(range(0x30, 0x30 + 20))


def fixed_random(n: int) -> bytes:
    return bytes((i * 37 + 11) & 0xFF for i in range(n))


class Script:
    """A scripted target: builds responses to the machine's requests."""

    def __init__(self, machine: LoginMachine) -> None:
        self.m = machine
        self.statsn = 0x1000
        self.requests: list[LoginRequest] = []

    def start(self) -> dict[str, str]:
        req = self.m.start()
        return self._record(req)

    def _record(self, req: LoginRequest) -> dict[str, str]:
        # every request goes through the wire codec
        again = decode_bytes(encode_bytes(req))
        assert isinstance(again, LoginRequest)
        self.requests.append(again)
        if again.cont or not again.data:
            return {}  # a continued (partial) text is checked by the test itself
        return dict(decode_text(again.data))

    @property
    def last(self) -> LoginRequest:
        return self.requests[-1]

    def reply(
        self, keys: list[tuple[str, str]] | bytes = b"", *, transit: bool = False,
        nsg: int = 0, cont: bool = False, status: int = 0, tsih: int = 0,
    ) -> dict[str, str] | LoginSuccess | LoginRedirect:
        req = self.last
        data = keys if isinstance(keys, bytes) else encode_text(list(keys))
        resp = LoginResponse(
            transit=transit, cont=cont, csg=req.csg, nsg=nsg if transit else 0,
            isid=req.isid, tsih=tsih, itt=req.itt, statsn=self.statsn, exp_cmdsn=req.cmdsn,
            max_cmdsn=req.cmdsn + 31, status_class=status >> 8, status_detail=status & 0xFF,
            data=data,
        )
        self.statsn += 1
        again = decode_bytes(encode_bytes(resp))
        assert isinstance(again, LoginResponse)
        step = self.m.receive(again)
        if isinstance(step, LoginRequest):
            return self._record(step)
        return step


TGT_ANSWERS = [
    ("HeaderDigest", "None"), ("DataDigest", "None"), ("MaxConnections", "1"),
    ("InitialR2T", "Yes"), ("ImmediateData", "Yes"), ("MaxRecvDataSegmentLength", "8192"),
    ("MaxBurstLength", "262144"), ("FirstBurstLength", "65536"), ("DefaultTime2Wait", "2"),
    ("DefaultTime2Retain", "0"), ("MaxOutstandingR2T", "1"), ("DataPDUInOrder", "Yes"),
    ("DataSequenceInOrder", "Yes"), ("ErrorRecoveryLevel", "0"),
]


def machine(**kw: object) -> LoginMachine:
    cfg = LoginConfig(initiator_name=INITIATOR, target_name=TARGET, itt=0x77, cmdsn=5, **kw)  # type: ignore[arg-type]
    return LoginMachine(cfg, random_bytes=fixed_random)


def finish_operational(s: Script, keys: dict[str, str], tsih: int = 9) -> LoginSuccess:
    assert s.last.csg == Stage.OPERATIONAL and s.last.transit and s.last.nsg == 3
    assert keys["MaxRecvDataSegmentLength"] == "262144"
    done = s.reply(TGT_ANSWERS, transit=True, nsg=3, tsih=tsih)
    assert isinstance(done, LoginSuccess)
    return done


def test_no_auth_success() -> None:
    s = Script(machine())
    first = s.start()
    req = s.last
    assert first == {"InitiatorName": INITIATOR, "SessionType": "Normal", "TargetName": TARGET,
                     "AuthMethod": "None"}
    assert req.immediate and req.transit and req.csg == 0 and req.nsg == 1
    assert req.isid[0] == 0x40 and req.tsih == 0 and req.itt == 0x77 and req.cmdsn == 5
    assert req.exp_statsn == 0
    keys = s.reply([("AuthMethod", "None"), ("TargetPortalGroupTag", "1")], transit=True, nsg=1)
    assert isinstance(keys, dict)
    assert s.last.exp_statsn == 0x1001 and s.last.cmdsn == 5
    done = finish_operational(s, keys)
    assert done.tsih == 9 and done.cmdsn == 5 and done.exp_statsn == 0x1002
    assert not done.authenticated and done.chap_algorithm is None
    assert done.params.target_portal_group_tag == 1
    assert done.params.max_xmit_data_segment_length == 8192
    assert done.params.initial_r2t and done.params.immediate_data


def test_target_skips_to_operational_from_same_pdu_keys() -> None:
    # The target answers AuthMethod without transit; we ask again with T=1.
    s = Script(machine())
    s.start()
    keys = s.reply([("AuthMethod", "None")])
    assert keys == {} and s.last.transit and s.last.csg == 0 and s.last.nsg == 1
    keys = s.reply([], transit=True, nsg=1)
    assert isinstance(keys, dict)
    finish_operational(s, keys)


def chap_md5(ident: int, secret: bytes, challenge: bytes) -> str:
    return "0x" + hashlib.md5(bytes([ident]) + secret + challenge).hexdigest()


def test_chap_one_way_tgtd_style() -> None:
    cr = ChapCredentials("user1", Secret("pass-word-12"))
    s = Script(machine(chap=cr))
    first = s.start()
    assert first["AuthMethod"] == "CHAP" and not s.last.transit
    keys = s.reply([("AuthMethod", "CHAP"), ("TargetPortalGroupTag", "1")])
    assert keys == {"CHAP_A": "8,6,5,7"} and not s.last.transit
    # tgtd walks our list and takes 5 (MD5)
    keys = s.reply([("CHAP_A", "5"), ("CHAP_I", "1"), ("CHAP_C", encode_hex(CHALLENGE))])
    assert isinstance(keys, dict)
    assert keys == {"CHAP_N": "user1", "CHAP_R": chap_md5(1, b"pass-word-12", CHALLENGE)}
    assert s.last.transit and s.last.nsg == 1 and s.last.csg == 0
    keys = s.reply([], transit=True, nsg=1)
    assert isinstance(keys, dict)
    done = finish_operational(s, keys)
    assert done.authenticated and done.chap_algorithm == ChapAlgorithm.MD5


def mutual_creds() -> ChapCredentials:
    return ChapCredentials("user1", Secret("pass-word-12"), target_username="tgt",
                           target_secret=Secret("target-pass-99"))


def run_to_chap_response(s: Script) -> dict[str, str]:
    s.start()
    s.reply([("AuthMethod", "CHAP")])
    keys = s.reply([("CHAP_A", "5"), ("CHAP_I", "200"), ("CHAP_C", encode_hex(CHALLENGE))])
    assert isinstance(keys, dict)
    return keys


def test_mutual_chap_ok() -> None:
    s = Script(machine(chap=mutual_creds()))
    keys = run_to_chap_response(s)
    assert keys["CHAP_R"] == chap_md5(200, b"pass-word-12", CHALLENGE)
    our_c = bytes.fromhex(keys["CHAP_C"][2:])
    answer = chap_md5(int(keys["CHAP_I"]), b"target-pass-99", our_c)
    nxt = s.reply([("CHAP_N", "tgt"), ("CHAP_R", answer)], transit=True, nsg=1)
    assert isinstance(nxt, dict)
    done = finish_operational(s, nxt)
    assert done.authenticated


def test_mutual_chap_wrong_target_answer() -> None:
    s = Script(machine(chap=mutual_creds()))
    keys = run_to_chap_response(s)
    our_c = bytes.fromhex(keys["CHAP_C"][2:])
    wrong = chap_md5(int(keys["CHAP_I"]), b"not-the-secret", our_c)
    with pytest.raises(AuthenticationError, match="wrong CHAP_R"):
        s.reply([("CHAP_N", "tgt"), ("CHAP_R", wrong)], transit=True, nsg=1)


def test_mutual_chap_target_without_answer() -> None:
    s = Script(machine(chap=mutual_creds()))
    run_to_chap_response(s)
    with pytest.raises(AuthenticationError, match="did not answer"):
        s.reply([], transit=True, nsg=1)


def test_mutual_chap_reflected_response() -> None:
    s = Script(machine(chap=mutual_creds()))
    keys = run_to_chap_response(s)
    with pytest.raises(AuthenticationError, match="reflected"):
        s.reply([("CHAP_N", "tgt"), ("CHAP_R", keys["CHAP_R"])], transit=True, nsg=1)


def test_reflected_challenge_across_logins() -> None:
    sent: set[bytes] = set()
    cfg = dict(initiator_name=INITIATOR, target_name=TARGET, chap=mutual_creds())
    m1 = LoginMachine(LoginConfig(**cfg), sent_challenges=sent)  # type: ignore[arg-type]
    s1 = Script(m1)
    keys = run_to_chap_response(s1)
    m2 = LoginMachine(LoginConfig(**cfg), sent_challenges=sent)  # type: ignore[arg-type]
    s2 = Script(m2)
    s2.start()
    s2.reply([("AuthMethod", "CHAP")])
    with pytest.raises(AuthenticationError, match="reflected"):
        s2.reply([("CHAP_A", "5"), ("CHAP_I", "1"), ("CHAP_C", keys["CHAP_C"])])


def test_target_picks_algorithm_we_did_not_offer() -> None:
    s = Script(machine(chap=ChapCredentials("u", Secret("s-12345")),
                       chap_algorithms=(ChapAlgorithm.MD5,)))
    s.start()
    assert s.reply([("AuthMethod", "CHAP")]) == {"CHAP_A": "5"}
    with pytest.raises(AuthenticationError, match="did not offer"):
        s.reply([("CHAP_A", "7"), ("CHAP_I", "1"), ("CHAP_C", encode_hex(CHALLENGE))])


def test_refuse_fallback_to_none_when_auth_required() -> None:
    s = Script(machine(chap=ChapCredentials("u", Secret("s-12345"))))
    s.start()
    with pytest.raises(AuthenticationError, match="required"):
        s.reply([("AuthMethod", "None")], transit=True, nsg=1)


def test_optional_chap_accepts_none() -> None:
    s = Script(machine(chap=ChapCredentials("u", Secret("s-12345")), require_auth=False))
    first = s.start()
    assert first["AuthMethod"] == "CHAP,None"
    keys = s.reply([("AuthMethod", "None")], transit=True, nsg=1)
    assert isinstance(keys, dict)
    assert not finish_operational(s, keys).authenticated


def test_target_requires_chap_but_none_configured() -> None:
    s = Script(machine())
    s.start()
    with pytest.raises(AuthenticationError, match="configure CHAP"):
        s.reply([("AuthMethod", "CHAP")])
    s2 = Script(machine())
    s2.start()
    with pytest.raises(LoginInitiatorError, match=r"authentication failure \(status 0x0201\)"):
        s2.reply([], status=0x0201)


@pytest.mark.parametrize(
    ("status", "cls", "text", "retry"),
    [
        (0x0201, LoginInitiatorError, "authentication failure (status 0x0201)", False),
        (0x0202, LoginInitiatorError, "authorization failure", False),
        (0x0203, LoginInitiatorError, "target not found (status 0x0203)", False),
        (0x0204, LoginInitiatorError, "target removed (status 0x0204)", False),
        (0x0205, LoginInitiatorError, "unsupported iSCSI version", False),
        (0x0206, LoginInitiatorError, "too many connections", True),
        (0x0207, LoginInitiatorError, "missing parameter", False),
        (0x0208, LoginInitiatorError, "cannot include", False),
        (0x0209, LoginInitiatorError, "session type not supported", False),
        (0x020A, LoginInitiatorError, "session does not exist", False),
        (0x020B, LoginInitiatorError, "invalid request during login", False),
        (0x0200, LoginInitiatorError, "initiator error (status 0x0200)", False),
        (0x0300, LoginTargetError, "target error (status 0x0300)", True),
        (0x0301, LoginTargetError, "service unavailable (target busy) (status 0x0301)", True),
        (0x0302, LoginTargetError, "out of resources (status 0x0302)", True),
        (0x02FF, LoginInitiatorError, "unknown detail", False),
        (0x0700, LoginError, "unknown login status class 7", False),
    ],
)
def test_status_classes(status: int, cls: type[LoginError], text: str, retry: bool) -> None:
    s = Script(machine())
    s.start()
    with pytest.raises(cls) as ei:
        s.reply([], status=status)
    assert text in str(ei.value)
    assert ei.value.status == status and ei.value.retryable == retry


def test_login_error_helper() -> None:
    e = login_error(2, 3)
    assert str(e) == "login failed: target not found (status 0x0203)"


@pytest.mark.parametrize(("detail", "permanent"), [(1, False), (2, True)])
def test_redirect(detail: int, permanent: bool) -> None:
    s = Script(machine())
    s.start()
    out = s.reply([("TargetAddress", "[fd00::5]:3261,2")], status=0x0100 | detail)
    assert isinstance(out, LoginRedirect)
    assert out.permanent is permanent
    assert (out.portal.host, out.portal.port, out.portal.tpgt) == ("fd00::5", 3261, 2)
    out2 = Script(machine())
    out2.start()
    r = out2.reply([("TargetAddress", "10.1.2.3")], status=0x0101)
    assert isinstance(r, LoginRedirect) and str(r.portal) == "10.1.2.3:3260"


def test_redirect_without_address_is_an_error() -> None:
    s = Script(machine())
    s.start()
    with pytest.raises(LoginError, match="moved temporarily"):
        s.reply([], status=0x0101)


def test_target_text_continuation() -> None:
    s = Script(machine())
    s.start()
    keys = s.reply([("AuthMethod", "None")], transit=True, nsg=1)
    assert isinstance(keys, dict)
    raw = encode_text([*TGT_ANSWERS, ("TargetAlias", "a" * 200)])
    parts = [raw[i:i + 50] for i in range(0, len(raw), 50)]
    for p in parts[:-1]:
        nxt = s.reply(p, cont=True)
        # we fetch the rest with an empty, non-transit request
        assert nxt == {} and not s.last.transit and not s.last.cont
    done = s.reply(parts[-1], transit=True, nsg=3, tsih=3)
    assert isinstance(done, LoginSuccess)
    assert done.params.target_alias == "a" * 200


def test_our_text_continuation() -> None:
    s = Script(machine(max_send_data=512, initiator_alias="b" * 255))
    s.start()
    keys = s.reply([("AuthMethod", "None")], transit=True, nsg=1)
    assert isinstance(keys, dict)
    # the operational offer fits in 512? make it longer by continuing: check C bits
    chunks = [s.last]
    while chunks[-1].cont:
        assert not chunks[-1].transit
        assert s.reply([]) is not None
        chunks.append(s.last)
    assert chunks[-1].transit
    joined = b"".join(bytes(c.data) for c in chunks)
    assert dict(decode_text(joined))["MaxBurstLength"] == "16776192"


def test_first_request_continued_when_long() -> None:
    cfg_name = "iqn.2024-01.org.example:" + "n" * 199
    m = LoginMachine(LoginConfig(initiator_name=cfg_name, target_name=TARGET + "x" * 180,
                                 initiator_alias="c" * 255, max_send_data=512))
    s = Script(m)
    s.start()
    assert s.last.cont and not s.last.transit and len(s.last.data) == 512
    s.reply([])
    assert not s.last.cont and s.last.transit
    keys = s.reply([("AuthMethod", "None")], transit=True, nsg=1)
    assert isinstance(keys, dict)


def test_target_answers_before_our_continuation_done() -> None:
    m = LoginMachine(LoginConfig(initiator_name="iqn.x:" + "n" * 200, target_name=TARGET,
                                 initiator_alias="c" * 255, max_send_data=512))
    s = Script(m)
    s.start()
    with pytest.raises(ProtocolError, match="continued"):
        s.reply([("AuthMethod", "None")])


def test_target_offers_keys_in_operational_stage() -> None:
    s = Script(machine())
    s.start()
    s.reply([("AuthMethod", "None")], transit=True, nsg=1)
    # The target answers and offers a key of its own without transit.
    keys = s.reply([*TGT_ANSWERS[:3], ("X-vendor.key", "1"), ("OFMarker", "No")])
    assert keys == {"X-vendor.key": "NotUnderstood", "OFMarker": "No"}
    assert s.last.transit and s.last.nsg == 3
    done = s.reply([], transit=True, nsg=3, tsih=1)
    assert isinstance(done, LoginSuccess)


def test_discovery_session() -> None:
    m = LoginMachine(LoginConfig(initiator_name=INITIATOR, discovery=True))
    s = Script(m)
    first = s.start()
    assert first == {"InitiatorName": INITIATOR, "SessionType": "Discovery",
                     "AuthMethod": "None"}
    keys = s.reply([("AuthMethod", "None")], transit=True, nsg=1)
    assert isinstance(keys, dict)
    assert "MaxBurstLength" not in keys and "HeaderDigest" in keys
    done = s.reply([("HeaderDigest", "None"), ("DataDigest", "None")], transit=True, nsg=3,
                   tsih=2)
    assert isinstance(done, LoginSuccess) and done.params.session_type == "Discovery"


def test_protocol_checks() -> None:
    s = Script(machine())
    s.start()
    req = s.last
    bad_itt = LoginResponse(isid=req.isid, itt=1)
    with pytest.raises(ProtocolError, match="ITT"):
        s.m.receive(bad_itt)
    s = Script(machine())
    s.start()
    with pytest.raises(ProtocolError, match="ISID"):
        s.m.receive(LoginResponse(isid=b"\x40" + bytes(5), itt=0x77, transit=True, nsg=1))
    s = Script(machine())
    s.start()
    with pytest.raises(ProtocolError, match="version"):
        s.m.receive(LoginResponse(isid=s.last.isid, itt=0x77, version_active=1))
    s = Script(machine())
    s.start()
    s.reply([("AuthMethod", "None")], transit=True, nsg=1)
    with pytest.raises(ProtocolError, match="TSIH 0"):
        s.reply(TGT_ANSWERS, transit=True, nsg=3, tsih=0)


def test_duplicate_key_in_response() -> None:
    s = Script(machine())
    s.start()
    with pytest.raises(Exception, match="twice"):
        s.reply([("AuthMethod", "None"), ("AuthMethod", "None")], transit=True, nsg=1)


def test_endless_login_is_bounded() -> None:
    s = Script(machine(max_exchanges=5))
    s.start()
    with pytest.raises(ProtocolError, match="did not finish"):
        for _ in range(10):
            s.reply([("AuthMethod", "None")])


def test_random_isid_format() -> None:
    isid = random_isid(fixed_random)
    assert len(isid) == 6 and isid[0] == 0x40  # T=01b random, A=0 (§11.12.5)
    m1 = LoginMachine(LoginConfig(initiator_name=INITIATOR, target_name=TARGET))
    m2 = LoginMachine(LoginConfig(initiator_name=INITIATOR, target_name=TARGET))
    assert m1.isid != m2.isid


def test_reinstatement_tsih_and_cid() -> None:
    s = Script(machine(tsih=0x1234, cid=3, isid=b"\x40\x01\x02\x03\x04\x05"))
    s.start()
    assert s.last.tsih == 0x1234 and s.last.cid == 3 and s.last.isid == b"\x40\x01\x02\x03\x04\x05"
    with pytest.raises(ProtocolError, match="TSIH"):
        s.reply([("AuthMethod", "None")], transit=True, nsg=1, tsih=0x9999)


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="TargetName"):
        LoginConfig(initiator_name=INITIATOR)
    with pytest.raises(ValueError, match="InitiatorName"):
        LoginConfig(initiator_name="", target_name=TARGET)
    with pytest.raises(ValueError, match="CHAP"):
        LoginConfig(initiator_name=INITIATOR, target_name=TARGET, require_auth=True)


def test_repr_hides_secrets() -> None:
    cfg = LoginConfig(initiator_name=INITIATOR, target_name=TARGET, chap=mutual_creds())
    assert "pass-word" not in repr(cfg) and "pass-word" not in repr(LoginMachine(cfg))
