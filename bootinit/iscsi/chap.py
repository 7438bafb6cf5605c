"""CHAP for iSCSI login (RFC 7143 §12.1.3, RFC 1994).

The initiator side of one-way and mutual CHAP:

1. we offer ``CHAP_A=<list>``;
2. the target picks one algorithm and sends ``CHAP_A``, ``CHAP_I`` (identifier)
   and ``CHAP_C`` (challenge);
3. we answer ``CHAP_N`` (our name) and ``CHAP_R = H(CHAP_I || secret ||
   CHAP_C)`` (RFC 1994 §4.1), and for mutual CHAP our own ``CHAP_I``/``CHAP_C``;
4. for mutual CHAP the target answers ``CHAP_N``/``CHAP_R`` which we verify.

Algorithm numbers are the IANA "PPP Authentication Algorithms" values used by
open-iscsi, LIO and SCST: MD5 = 5, SHA-1 = 6, SHA-256 = 7, SHA3-256 = 8.

tgtd (Debian ``tgt``) knows only 5 (MD5) and, non-standardly, 7 meaning SHA-1;
it walks *our* list in order and takes the first of "5"/"7".  Offering 7 before
5 would make tgtd pick 7 and compute SHA-1 while we compute SHA-256.  So the
default offer is ``8,6,5,7``: tgtd picks MD5, modern targets pick SHA3-256 or
SHA-1, and a target that has MD5 disabled (FIPS) may still pick SHA-256.

Binary values travel as ``0x`` hex or ``0b`` base64 (RFC 7143 §6.1); we send
hex.  Secrets never appear in reprs, logs or errors: :class:`Secret` hides them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets as _secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import IntEnum

from bootinit.iscsi.errors import AuthenticationError, KeyFormatError

MAX_CHALLENGE = 1024
"""Largest challenge accepted or sent, in bytes (RFC 7143 §12.1.3 bounds it at 1024)."""
MIN_CHALLENGE = 1


class ChapAlgorithm(IntEnum):
    """CHAP_A values (IANA PPP Authentication Algorithms, RFC 7143 §12.1.3)."""

    MD5 = 5
    SHA1 = 6
    SHA256 = 7
    SHA3_256 = 8

    @property
    def hash_name(self) -> str:
        """hashlib name of the algorithm."""
        return _HASHES[self]

    @property
    def digest_size(self) -> int:
        """Length of a CHAP_R for this algorithm, in bytes."""
        return hashlib.new(_HASHES[self]).digest_size


_HASHES = {
    ChapAlgorithm.MD5: "md5",
    ChapAlgorithm.SHA1: "sha1",
    ChapAlgorithm.SHA256: "sha256",
    ChapAlgorithm.SHA3_256: "sha3_256",
}

DEFAULT_ALGORITHMS: tuple[ChapAlgorithm, ...] = (
    ChapAlgorithm.SHA3_256,
    ChapAlgorithm.SHA1,
    ChapAlgorithm.MD5,
    ChapAlgorithm.SHA256,
)
"""Default CHAP_A offer ``8,6,5,7`` (see the module doc for why 7 comes after 5)."""


class Secret:
    """A CHAP secret whose value never shows in repr/str (kept as bytes)."""

    __slots__ = ("_value",)

    def __init__(self, value: str | bytes) -> None:
        raw = value.encode("utf-8") if isinstance(value, str) else bytes(value)
        if not raw:
            raise ValueError("CHAP secret must not be empty")
        if len(raw) > 255:
            raise ValueError("CHAP secret longer than 255 bytes")
        self._value = raw

    def reveal(self) -> bytes:
        """The secret bytes (only for computing a response)."""
        return self._value

    def __repr__(self) -> str:
        return "Secret(<redacted>)"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value, other._value)

    def __hash__(self) -> int:
        return hash(("Secret", len(self._value)))


@dataclass(frozen=True, slots=True)
class ChapCredentials:
    """CHAP names and secrets; ``target_secret`` set means mutual CHAP.

    ``target_username``, when set, must equal the CHAP_N the target answers with.
    RFC 7143 §12.1.3 forbids using one secret for both directions (reflection
    attacks), so equal secrets are refused.
    """

    username: str
    secret: Secret = field(repr=False)
    target_username: str | None = None
    target_secret: Secret | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not self.username or len(self.username.encode()) > 255:
            raise ValueError("CHAP username must be 1..255 bytes")
        if self.target_secret is not None and self.target_secret == self.secret:
            raise ValueError(
                "the CHAP secret for target authentication must differ from the "
                "initiator's (RFC 7143 §12.1.3)"
            )

    @property
    def mutual(self) -> bool:
        """True when the target must authenticate itself too."""
        return self.target_secret is not None


def chap_response(
    algorithm: ChapAlgorithm, identifier: int, secret: bytes, challenge: bytes
) -> bytes:
    """``H(identifier || secret || challenge)`` (RFC 1994 §4.1)."""
    h = hashlib.new(algorithm.hash_name)
    h.update(bytes((identifier & 0xFF,)))
    h.update(secret)
    h.update(challenge)
    return h.digest()


def decode_binary(key: str, value: str, max_len: int = MAX_CHALLENGE) -> bytes:
    """Decode a ``0x`` hex or ``0b`` base64 binary value (RFC 7143 §6.1)."""
    if len(value) < 3 or value[0] != "0" or value[1] not in "xXbB":
        raise KeyFormatError(key, value, "binary value must start with 0x or 0b (§6.1)")
    body = value[2:]
    # Bound before decoding: hex takes 2 characters a byte, base64 4 per 3.
    if len(body) > 2 * max_len + 1:
        raise KeyFormatError(key, value, f"longer than {max_len} bytes")
    try:
        if value[1] in "xX":
            if len(body) % 2:
                body = "0" + body
            raw = bytes.fromhex(body)
        else:
            raw = base64.b64decode(body, validate=True)
    except (ValueError, binascii.Error):
        raise KeyFormatError(key, value, "malformed hex/base64 value") from None
    if not MIN_CHALLENGE <= len(raw) <= max_len:
        raise KeyFormatError(key, value, f"length {len(raw)} outside 1..{max_len} bytes")
    return raw


def encode_hex(raw: bytes) -> str:
    """``0x`` + lower-case hex (the form tgtd and every target accept)."""
    return "0x" + raw.hex()


def encode_base64(raw: bytes) -> str:
    """``0b`` + base64 with padding (RFC 7143 §6.1)."""
    return "0b" + base64.b64encode(raw).decode("ascii")


def _identifier(value: str) -> int:
    try:
        if value.lower().startswith("0x"):
            n = int(value[2:], 16)
        elif value.isdigit():
            n = int(value)
        else:
            raise ValueError
    except ValueError:
        raise KeyFormatError("CHAP_I", value, "not a number") from None
    if not 0 <= n <= 255:
        raise KeyFormatError("CHAP_I", value, "outside 0..255")
    return n


class ChapInitiator:
    """Initiator side of one CHAP exchange (RFC 7143 §12.1.3).

    ``sent_challenges`` may be shared between logins: a target that presents a
    challenge we ourselves sent earlier is refused (reflection).
    """

    def __init__(
        self,
        credentials: ChapCredentials,
        *,
        algorithms: tuple[ChapAlgorithm, ...] = DEFAULT_ALGORITHMS,
        random_bytes: Callable[[int], bytes] = _secrets.token_bytes,
        challenge_length: int = 32,
        sent_challenges: set[bytes] | None = None,
    ) -> None:
        if not algorithms:
            raise ValueError("at least one CHAP algorithm must be offered")
        if not 16 <= challenge_length <= MAX_CHALLENGE:
            raise ValueError("challenge length must be 16..1024 bytes")
        self.credentials = credentials
        self.algorithms = tuple(ChapAlgorithm(a) for a in algorithms)
        self._random = random_bytes
        self._challenge_length = challenge_length
        self._sent = sent_challenges if sent_challenges is not None else set()
        self.algorithm: ChapAlgorithm | None = None
        self._our_id: int | None = None
        self._our_challenge: bytes | None = None
        self._our_response: bytes | None = None

    def __repr__(self) -> str:
        return f"ChapInitiator(user={self.credentials.username!r}, algorithm={self.algorithm})"

    @property
    def mutual(self) -> bool:
        """True when we authenticate the target too."""
        return self.credentials.mutual

    def offer(self) -> list[tuple[str, str]]:
        """``CHAP_A`` with our algorithm list."""
        return [("CHAP_A", ",".join(str(int(a)) for a in self.algorithms))]

    def respond(self, keys: Mapping[str, str]) -> list[tuple[str, str]]:
        """Answer the target's CHAP_A/CHAP_I/CHAP_C with CHAP_N/CHAP_R (+ our challenge)."""
        a_value = keys.get("CHAP_A")
        if a_value is None:
            raise AuthenticationError("target sent no CHAP_A")
        try:
            algorithm = ChapAlgorithm(int(a_value)) if a_value.isdigit() else None
        except ValueError:
            algorithm = None
        if algorithm is None or algorithm not in self.algorithms:
            raise AuthenticationError(
                f"target chose CHAP_A={a_value[:16]!r}, which we did not offer "
                f"({','.join(str(int(a)) for a in self.algorithms)})"
            )
        self.algorithm = algorithm
        if "CHAP_I" not in keys or "CHAP_C" not in keys:
            raise AuthenticationError("target sent no CHAP_I/CHAP_C challenge")
        ident = _identifier(keys["CHAP_I"])
        challenge = decode_binary("CHAP_C", keys["CHAP_C"])
        if challenge in self._sent:
            raise AuthenticationError("target reflected a challenge we sent (RFC 7143 §12.1.3)")
        response = chap_response(algorithm, ident, self.credentials.secret.reveal(), challenge)
        self._our_response = response
        out = [("CHAP_N", self.credentials.username), ("CHAP_R", encode_hex(response))]
        if self.mutual:
            our_c = self._random(self._challenge_length)
            while our_c == challenge or our_c in self._sent:
                # Never send the target's own challenge back (§12.1.3).
                our_c = self._random(self._challenge_length)
            our_id = self._random(1)[0]
            self._our_id, self._our_challenge = our_id, our_c
            self._sent.add(our_c)
            out += [("CHAP_I", str(our_id)), ("CHAP_C", encode_hex(our_c))]
        return out

    def verify(self, keys: Mapping[str, str]) -> None:
        """Check the target's CHAP_N/CHAP_R for mutual CHAP; no-op for one-way."""
        if not self.mutual:
            return
        assert self.algorithm is not None and self._our_challenge is not None
        assert self._our_id is not None and self.credentials.target_secret is not None
        name, resp = keys.get("CHAP_N"), keys.get("CHAP_R")
        if name is None or resp is None:
            raise AuthenticationError("target did not answer our CHAP challenge (mutual CHAP)")
        expected_name = self.credentials.target_username
        if expected_name is not None and name != expected_name:
            raise AuthenticationError("target answered with an unexpected CHAP_N")
        got = decode_binary("CHAP_R", resp, max_len=64)
        if self._our_response is not None and hmac.compare_digest(got, self._our_response):
            raise AuthenticationError("target reflected our own CHAP_R (RFC 7143 §12.1.3)")
        want = chap_response(self.algorithm, self._our_id,
                             self.credentials.target_secret.reveal(), self._our_challenge)
        if len(got) != len(want):
            hint = ""
            if self.algorithm == ChapAlgorithm.SHA256 and len(got) == 20:
                hint = " (tgtd treats CHAP_A=7 as SHA-1: leave 7 out of the offer)"
            raise AuthenticationError(
                f"target CHAP_R has {len(got)} bytes, {self.algorithm.name} gives "
                f"{len(want)}{hint}"
            )
        if not hmac.compare_digest(got, want):
            raise AuthenticationError("target failed mutual CHAP authentication (wrong CHAP_R)")


__all__ = [
    "DEFAULT_ALGORITHMS", "MAX_CHALLENGE", "ChapAlgorithm", "ChapCredentials",
    "ChapInitiator", "Secret", "chap_response", "decode_binary", "encode_base64",
    "encode_hex",
]
