"""CHAP (RFC 1994 / RFC 7143 §12.1.3) against hand-computed vectors."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable

import pytest

from bootinit.iscsi.chap import (
    DEFAULT_ALGORITHMS,
    ChapAlgorithm,
    ChapCredentials,
    ChapInitiator,
    Secret,
    chap_response,
    decode_binary,
    encode_base64,
    encode_hex,
)
from bootinit.iscsi.errors import AuthenticationError, KeyFormatError

CHALLENGE = bytes.fromhex("0123456789abcdeffedcba9876543210")


def counter_random() -> Callable[[int], bytes]:
    state = {"n": 0}

    def rnd(n: int) -> bytes:
        state["n"] += 1
        return bytes([(state["n"] + i) & 0xFF for i in range(n)])

    return rnd


def test_algorithm_numbers_are_iana() -> None:
    assert (ChapAlgorithm.MD5, ChapAlgorithm.SHA1, ChapAlgorithm.SHA256,
            ChapAlgorithm.SHA3_256) == (5, 6, 7, 8)
    assert [a.digest_size for a in ChapAlgorithm] == [16, 20, 32, 32]


def test_default_offer_puts_md5_before_7_for_tgtd() -> None:
    # tgtd takes the first of "5" or "7" in our list and thinks 7 is SHA-1.
    offer = ",".join(str(int(a)) for a in DEFAULT_ALGORITHMS)
    assert offer == "8,6,5,7"
    assert offer.index("5") < offer.index("7")


def test_md5_vector_by_hand() -> None:
    # RFC 1994 §4.1: MD5(Identifier || secret || Challenge)
    want = hashlib.md5(b"\x01" + b"secretsecret" + CHALLENGE).digest()
    assert chap_response(ChapAlgorithm.MD5, 1, b"secretsecret", CHALLENGE) == want
    assert chap_response(ChapAlgorithm.SHA256, 255, b"k", b"c") == hashlib.sha256(
        b"\xffkc").digest()
    assert chap_response(ChapAlgorithm.SHA3_256, 0, b"k", b"c") == hashlib.sha3_256(
        b"\x00kc").digest()


def test_binary_encodings() -> None:
    assert decode_binary("CHAP_C", "0x0a0B") == b"\x0a\x0b"
    assert decode_binary("CHAP_C", "0XABC") == b"\x0a\xbc"  # odd digit count
    b64 = "0b" + base64.b64encode(CHALLENGE).decode()
    assert decode_binary("CHAP_C", b64) == CHALLENGE
    assert encode_hex(b"\x01\xff") == "0x01ff"
    assert decode_binary("CHAP_R", encode_base64(b"\x00\x01\x02\x03")) == b"\x00\x01\x02\x03"


@pytest.mark.parametrize("value", ["", "12", "0y12", "0xZZ", "0b!!!!", "0b" + "A" * 5,
                                   "0x" + "00" * 1025])
def test_bad_binary_values(value: str) -> None:
    with pytest.raises(KeyFormatError):
        decode_binary("CHAP_C", value)


def creds(mutual: bool = False) -> ChapCredentials:
    return ChapCredentials(
        "initiator-user", Secret("initiator-secret"),
        target_username="target-user" if mutual else None,
        target_secret=Secret("target-secret-1") if mutual else None,
    )


def test_one_way_response() -> None:
    c = ChapInitiator(creds())
    assert c.offer() == [("CHAP_A", "8,6,5,7")]
    out = dict(c.respond({"CHAP_A": "5", "CHAP_I": "42", "CHAP_C": encode_hex(CHALLENGE)}))
    assert out["CHAP_N"] == "initiator-user"
    want = hashlib.md5(b"\x2a" + b"initiator-secret" + CHALLENGE).hexdigest()
    assert out["CHAP_R"] == "0x" + want
    assert "CHAP_C" not in out
    c.verify({})  # one-way: nothing to check


def test_base64_challenge_and_sha1() -> None:
    c = ChapInitiator(creds())
    out = dict(c.respond({"CHAP_A": "6", "CHAP_I": "0x10", "CHAP_C": encode_base64(CHALLENGE)}))
    assert out["CHAP_R"] == "0x" + hashlib.sha1(b"\x10initiator-secret" + CHALLENGE).hexdigest()


def test_algorithm_not_offered_refused() -> None:
    c = ChapInitiator(creds(), algorithms=(ChapAlgorithm.MD5,))
    assert c.offer() == [("CHAP_A", "5")]
    with pytest.raises(AuthenticationError, match="did not offer"):
        c.respond({"CHAP_A": "7", "CHAP_I": "1", "CHAP_C": encode_hex(CHALLENGE)})
    with pytest.raises(AuthenticationError, match="did not offer"):
        c.respond({"CHAP_A": "Reject", "CHAP_I": "1", "CHAP_C": encode_hex(CHALLENGE)})


def test_missing_challenge() -> None:
    with pytest.raises(AuthenticationError, match="challenge"):
        ChapInitiator(creds()).respond({"CHAP_A": "5"})


def test_absurd_challenge_size() -> None:
    with pytest.raises(KeyFormatError, match="1024"):
        ChapInitiator(creds()).respond(
            {"CHAP_A": "5", "CHAP_I": "1", "CHAP_C": "0x" + "ab" * 5000})


def test_bad_identifier() -> None:
    with pytest.raises(KeyFormatError, match="CHAP_I"):
        ChapInitiator(creds()).respond({"CHAP_A": "5", "CHAP_I": "256", "CHAP_C": "0x01"})


def mutual_exchange() -> tuple[ChapInitiator, dict[str, str]]:
    c = ChapInitiator(creds(mutual=True), random_bytes=counter_random())
    out = dict(c.respond({"CHAP_A": "5", "CHAP_I": "7", "CHAP_C": encode_hex(CHALLENGE)}))
    return c, out


def target_answer(out: dict[str, str], secret: bytes = b"target-secret-1") -> str:
    ident = int(out["CHAP_I"])
    chal = bytes.fromhex(out["CHAP_C"][2:])
    return "0x" + hashlib.md5(bytes([ident]) + secret + chal).hexdigest()


def test_mutual_ok() -> None:
    c, out = mutual_exchange()
    assert "CHAP_I" in out and "CHAP_C" in out
    assert bytes.fromhex(out["CHAP_C"][2:]) != CHALLENGE
    c.verify({"CHAP_N": "target-user", "CHAP_R": target_answer(out)})


def test_mutual_wrong_answer() -> None:
    c, out = mutual_exchange()
    with pytest.raises(AuthenticationError, match="wrong CHAP_R"):
        c.verify({"CHAP_N": "target-user", "CHAP_R": target_answer(out, b"guess")})


def test_mutual_missing_answer() -> None:
    c, _ = mutual_exchange()
    with pytest.raises(AuthenticationError, match="did not answer"):
        c.verify({})


def test_mutual_wrong_name() -> None:
    c, out = mutual_exchange()
    with pytest.raises(AuthenticationError, match="CHAP_N"):
        c.verify({"CHAP_N": "someone", "CHAP_R": target_answer(out)})


def test_mutual_reflected_response() -> None:
    c, out = mutual_exchange()
    with pytest.raises(AuthenticationError, match="reflected"):
        c.verify({"CHAP_N": "target-user", "CHAP_R": out["CHAP_R"]})


def test_never_send_the_targets_challenge_back() -> None:
    calls: list[int] = []

    def rnd(n: int) -> bytes:
        calls.append(n)
        return CHALLENGE if len(calls) == 1 else bytes(range(1, n + 1))

    c = ChapInitiator(creds(mutual=True), random_bytes=rnd, challenge_length=16)
    out = dict(c.respond({"CHAP_A": "5", "CHAP_I": "7", "CHAP_C": encode_hex(CHALLENGE)}))
    assert bytes.fromhex(out["CHAP_C"][2:]) != CHALLENGE


def test_target_presenting_our_old_challenge_refused() -> None:
    sent: set[bytes] = set()
    c1 = ChapInitiator(creds(mutual=True), sent_challenges=sent, random_bytes=counter_random())
    out = dict(c1.respond({"CHAP_A": "5", "CHAP_I": "7", "CHAP_C": encode_hex(CHALLENGE)}))
    c2 = ChapInitiator(creds(mutual=True), sent_challenges=sent)
    with pytest.raises(AuthenticationError, match="reflected a challenge"):
        c2.respond({"CHAP_A": "5", "CHAP_I": "7", "CHAP_C": out["CHAP_C"]})


def test_tgtd_sha1_as_7_hint() -> None:
    c = ChapInitiator(creds(mutual=True), algorithms=(ChapAlgorithm.SHA256,))
    c.respond({"CHAP_A": "7", "CHAP_I": "1", "CHAP_C": encode_hex(CHALLENGE)})
    with pytest.raises(AuthenticationError, match="tgtd"):
        c.verify({"CHAP_N": "target-user", "CHAP_R": "0x" + "00" * 20})


def test_secrets_never_shown() -> None:
    cr = creds(mutual=True)
    for text in (repr(cr), str(cr), repr(cr.secret), repr(ChapInitiator(cr))):
        assert "initiator-secret" not in text and "target-secret" not in text


def test_same_secret_both_ways_refused() -> None:
    with pytest.raises(ValueError, match="differ"):
        ChapCredentials("u", Secret("same-secret"), target_secret=Secret("same-secret"))
