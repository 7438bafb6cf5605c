"""The login phase as a pure state machine (RFC 7143 §6, §11.12, §11.13, §12).

::

    m = LoginMachine(LoginConfig(initiator_name=..., target_name=...))
    req = m.start()                       # first Login Request
    while True:
        send(req); resp = receive()       # LoginResponse PDUs
        step = m.receive(resp)            # LoginRequest | LoginSuccess | LoginRedirect
        if not isinstance(step, LoginRequest): break
        req = step

``receive`` raises :class:`LoginError` (status class 2/3 with a clear text),
:class:`AuthenticationError`, :class:`NegotiationError` or
:class:`ProtocolError`; :class:`LoginRedirect` is returned for status class 1.

Stages: SecurityNegotiation (CSG=0) with ``AuthMethod`` = ``None``,
``CHAP`` or ``CHAP,None``; LoginOperationalNegotiation (CSG=1) with our
whole operational offer and T=1 towards FullFeaturePhase (NSG=3).  Text may
be continued with the C bit both ways (§6.3, §11.12.2, §11.13.3).  All login
requests are immediate and carry the same CmdSN (§11.12.6); ExpStatSN follows
the target's StatSN.
"""

from __future__ import annotations

import secrets as _secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

from bootinit.iscsi.chap import DEFAULT_ALGORITHMS, ChapAlgorithm, ChapCredentials, ChapInitiator
from bootinit.iscsi.errors import (
    AuthenticationError,
    LoginError,
    LoginInitiatorError,
    LoginTargetError,
    NegotiationError,
    ProtocolError,
)
from bootinit.iscsi.keys import (
    SECURITY_KEYS,
    SPECIAL_ANSWERS,
    NegotiatedParams,
    Negotiator,
    OperationalConfig,
    Pairs,
    TextAssembler,
    encode_text,
    split_text,
)
from bootinit.iscsi.pdu import LoginRequest, LoginResponse, Stage
from bootinit.iscsi.serial import sn_inc
from bootinit.iscsi.text import Portal, parse_portal

LOGIN_MAX_DATA = 8192
"""MaxRecvDataSegmentLength in force during login (RFC 7143 §13.12: default 8192)."""

# Status-Class/Status-Detail texts (RFC 7143 §11.13.5).
LOGIN_STATUS: dict[int, str] = {
    0x0000: "success",
    0x0101: "target moved temporarily",
    0x0102: "target moved permanently",
    0x0200: "initiator error",
    0x0201: "authentication failure",
    0x0202: "authorization failure: initiator not allowed to access this target",
    0x0203: "target not found",
    0x0204: "target removed",
    0x0205: "unsupported iSCSI version",
    0x0206: "too many connections",
    0x0207: "missing parameter",
    0x0208: "cannot include this connection in the session",
    0x0209: "session type not supported",
    0x020A: "session does not exist",
    0x020B: "invalid request during login",
    0x0300: "target error",
    0x0301: "service unavailable (target busy)",
    0x0302: "out of resources",
}
_RETRYABLE = frozenset((0x0206, 0x0300, 0x0301, 0x0302))


def login_error(status_class: int, status_detail: int) -> LoginError:
    """The typed error for a non-success login status (RFC 7143 §11.13.5)."""
    status = (status_class << 8) | status_detail
    text = LOGIN_STATUS.get(status)
    if text is None:
        text = {2: "initiator error", 3: "target error"}.get(
            status_class, f"unknown login status class {status_class}")
        text += " (unknown detail)"
    cls: type[LoginError] = LoginError
    if status_class == 2:
        cls = LoginInitiatorError
    elif status_class == 3:
        cls = LoginTargetError
    return cls(status_class, status_detail, f"login failed: {text}", status in _RETRYABLE)


def random_isid(random_bytes: Callable[[int], bytes] = _secrets.token_bytes) -> bytes:
    """A random-format ISID (RFC 7143 §11.12.5): T=01b, A=0, B and C random, D random."""
    return b"\x40" + random_bytes(5)


@dataclass(slots=True)
class LoginConfig:
    """What a login needs.  ``chap`` set means CHAP is offered.

    ``require_auth`` (default: True when ``chap`` is set) refuses a target that
    picks AuthMethod=None; with it False we offer ``CHAP,None``.  Mutual CHAP
    always requires authentication.  ``isid`` None draws a random ISID;
    ``tsih`` is 0 for a new session (§11.12.6).
    """

    initiator_name: str
    target_name: str | None = None
    discovery: bool = False
    initiator_alias: str | None = None
    chap: ChapCredentials | None = field(default=None, repr=False)
    require_auth: bool | None = None
    chap_algorithms: tuple[ChapAlgorithm, ...] = DEFAULT_ALGORITHMS
    operational: OperationalConfig = field(default_factory=OperationalConfig)
    isid: bytes | None = None
    tsih: int = 0
    cid: int = 0
    itt: int = 0
    cmdsn: int = 0
    exp_statsn: int = 0
    max_exchanges: int = 64
    text_limit: int = 65536
    max_send_data: int = LOGIN_MAX_DATA
    """Largest data segment we send during login; longer text goes out with C=1."""

    def __post_init__(self) -> None:
        if not self.initiator_name:
            raise ValueError("InitiatorName is required (RFC 7143 §13.5)")
        if not self.discovery and not self.target_name:
            raise ValueError("TargetName is required for a normal session (§13.4)")
        if self.isid is not None and len(self.isid) != 6:
            raise ValueError("ISID must be 6 bytes")
        if self.chap is None and self.require_auth:
            raise ValueError("require_auth needs CHAP credentials")
        if not 512 <= self.max_send_data <= LOGIN_MAX_DATA:
            raise ValueError("max_send_data must be 512..8192 during login (§13.12)")

    @property
    def auth_required(self) -> bool:
        """True when AuthMethod=None must be refused."""
        if self.chap is None:
            return False
        if self.chap.mutual:
            return True
        return True if self.require_auth is None else self.require_auth


@dataclass(frozen=True, slots=True)
class LoginSuccess:
    """Login completed: the connection is in the full feature phase (§6.3.6).

    ``cmdsn`` is the CmdSN of the first non-immediate command (the target's
    ExpCmdSN), ``exp_statsn`` the StatSN we expect next.
    """

    params: NegotiatedParams
    isid: bytes
    tsih: int
    cid: int
    cmdsn: int
    exp_cmdsn: int
    max_cmdsn: int
    exp_statsn: int
    authenticated: bool
    chap_algorithm: ChapAlgorithm | None


@dataclass(frozen=True, slots=True)
class LoginRedirect:
    """Status class 1: log in again at ``portal`` (RFC 7143 §11.13.5, §13.8)."""

    portal: Portal
    permanent: bool
    status_detail: int

    def __str__(self) -> str:
        kind = "permanently" if self.permanent else "temporarily"
        return f"target moved {kind} to {self.portal}"


LoginStep = LoginRequest | LoginSuccess | LoginRedirect


class _Auth(Enum):
    OFFERED = "auth-method offered"
    CHAP_A_SENT = "CHAP_A sent"
    CHAP_R_SENT = "CHAP response sent"
    DONE = "authenticated"


class LoginMachine:
    """Initiator login state machine for one connection (see module doc)."""

    def __init__(
        self,
        config: LoginConfig,
        *,
        random_bytes: Callable[[int], bytes] = _secrets.token_bytes,
        sent_challenges: set[bytes] | None = None,
    ) -> None:
        self.config = config
        self.isid = config.isid if config.isid is not None else random_isid(random_bytes)
        self.negotiator = Negotiator(config.operational, discovery=config.discovery)
        self._chap: ChapInitiator | None = None
        if config.chap is not None:
            self._chap = ChapInitiator(config.chap, algorithms=config.chap_algorithms,
                                       random_bytes=random_bytes,
                                       sent_challenges=sent_challenges)
        self.stage = Stage.SECURITY
        self._auth = _Auth.OFFERED
        self._authenticated = False
        self._cmdsn = config.cmdsn
        self._exp_statsn = config.exp_statsn
        self._assembler = TextAssembler(config.text_limit)
        self._out: list[bytes] = []  # our text chunks still to send (C bit)
        self._out_transit = False
        self._out_nsg = 0
        self._exchanges = 0
        self._started = False
        self.finished = False

    def __repr__(self) -> str:
        return f"LoginMachine(stage={self.stage.name}, auth={self._auth.value})"

    # -- building requests ---------------------------------------------------

    def _auth_offer(self) -> str:
        if self._chap is None:
            return "None"
        return "CHAP" if self.config.auth_required else "CHAP,None"

    def _request(self, data: bytes, *, transit: bool, nsg: int, cont: bool = False
                 ) -> LoginRequest:
        return LoginRequest(
            transit=transit, cont=cont, csg=self.stage, nsg=nsg if transit else 0,
            isid=self.isid, tsih=self.config.tsih, itt=self.config.itt, cid=self.config.cid,
            cmdsn=self._cmdsn, exp_statsn=self._exp_statsn, data=data,
        )

    def _send_text(self, pairs: Pairs, *, transit: bool, nsg: int) -> LoginRequest:
        """A request carrying ``pairs``; split with C=1 beyond 8192 bytes (§6.3)."""
        chunks = split_text(encode_text(pairs), self.config.max_send_data)
        self._out = chunks[1:]
        self._out_transit, self._out_nsg = transit, nsg
        if self._out:
            return self._request(chunks[0], transit=False, nsg=0, cont=True)
        return self._request(chunks[0], transit=transit, nsg=nsg)

    def start(self) -> LoginRequest:
        """The first Login Request (SecurityNegotiation, §6.3.1)."""
        if self._started:
            raise ProtocolError("login already started")
        self._started = True
        cfg = self.config
        pairs: Pairs = [("InitiatorName", cfg.initiator_name)]
        if cfg.initiator_alias:
            pairs.append(("InitiatorAlias", cfg.initiator_alias))
        if cfg.discovery:
            pairs.append(("SessionType", "Discovery"))
        else:
            pairs.append(("SessionType", "Normal"))
            assert cfg.target_name is not None
            pairs.append(("TargetName", cfg.target_name))
        pairs.append(("AuthMethod", self._auth_offer()))
        # With AuthMethod=None only, ask to move on at once; CHAP needs more steps.
        return self._send_text(pairs, transit=self._chap is None, nsg=Stage.OPERATIONAL)

    # -- receiving -----------------------------------------------------------

    def receive(self, resp: LoginResponse) -> LoginStep:
        """Process one Login Response; return the next request or the outcome."""
        if not self._started or self.finished:
            raise ProtocolError("Login Response outside an active login")
        self._exchanges += 1
        if self._exchanges > self.config.max_exchanges:
            raise ProtocolError(f"login did not finish in {self.config.max_exchanges} exchanges")
        if resp.itt != self.config.itt:
            raise ProtocolError(
                f"Login Response ITT 0x{resp.itt:08x}, expected 0x{self.config.itt:08x}")
        self._exp_statsn = sn_inc(resp.statsn)
        if resp.status_class == 1:
            self.finished = True
            return self._redirect(resp)
        if resp.status_class != 0 or resp.status_detail != 0:
            self.finished = True
            raise login_error(resp.status_class, resp.status_detail)
        if resp.version_active != 0 or resp.version_max != 0:
            raise ProtocolError(
                f"target uses iSCSI version {resp.version_active} (we support 0, §11.13.4)")
        if resp.isid != self.isid:
            raise ProtocolError(f"Login Response ISID {resp.isid.hex()} is not ours")
        if self.config.tsih and resp.tsih not in (0, self.config.tsih):
            raise ProtocolError(f"Login Response TSIH {resp.tsih}, we log in to {self.config.tsih}")
        if resp.csg != self.stage:
            raise ProtocolError(f"Login Response CSG {resp.csg} while we are in {self.stage}")
        if self._out:
            # Our text is continued: the target acknowledges each part (§6.3).
            if resp.data_length or resp.transit:
                raise ProtocolError("target answered before our continued text was complete")
            chunk = self._out.pop(0)
            if self._out:
                return self._request(chunk, transit=False, nsg=0, cont=True)
            return self._request(chunk, transit=self._out_transit, nsg=self._out_nsg)
        pairs = self._assembler.add(resp.data, resp.cont)
        if pairs is None:
            # The target's text continues: fetch the rest with an empty request.
            return self._request(b"", transit=False, nsg=0)
        keys = self._check_unique(pairs)
        if self.stage == Stage.SECURITY:
            return self._security(resp, pairs, keys)
        return self._operational(resp, pairs)

    @staticmethod
    def _check_unique(pairs: Pairs) -> dict[str, str]:
        keys: dict[str, str] = {}
        for k, v in pairs:
            if k in keys and k != "TargetAddress":
                raise NegotiationError(k, v, "key sent twice in one login response (§6.2)")
            keys[k] = v
        return keys

    def _redirect(self, resp: LoginResponse) -> LoginRedirect:
        pairs = self._assembler.add(resp.data, False)
        addrs = [v for k, v in (pairs or []) if k == "TargetAddress"]
        if not addrs:
            raise login_error(resp.status_class, resp.status_detail)
        return LoginRedirect(parse_portal(addrs[0]), resp.status_detail == 0x02,
                             resp.status_detail)

    def _security(self, resp: LoginResponse, pairs: Pairs, keys: dict[str, str]) -> LoginStep:
        other = [(k, v) for k, v in pairs if k not in SECURITY_KEYS]
        answers = self.negotiator.receive(other)
        if self._auth is _Auth.OFFERED:
            method = keys.get("AuthMethod")
            if method is None:
                if resp.transit and not self.config.auth_required:
                    method = "None"  # target skipped the key: the default None (§12.1)
                else:
                    raise ProtocolError("target did not answer AuthMethod")
            offered = self._auth_offer().split(",")
            if method in SPECIAL_ANSWERS:
                if self.config.auth_required:
                    raise AuthenticationError(
                        f"target answered AuthMethod={method}: CHAP is required")
                method = "None"
            if method not in offered:
                if method == "None" and self.config.auth_required:
                    raise AuthenticationError(
                        "target chose AuthMethod=None but authentication is required; "
                        "refusing to log in without CHAP")
                raise AuthenticationError(
                    f"target chose AuthMethod={method[:32]!r}, we offered {self._auth_offer()} "
                    "(configure CHAP credentials if the target requires them)")
            if method == "CHAP":
                assert self._chap is not None
                self._auth = _Auth.CHAP_A_SENT
                return self._send_text(answers + self._chap.offer(), transit=False, nsg=0)
            self._auth = _Auth.DONE
            return self._after_auth(resp, answers)
        if self._auth is _Auth.CHAP_A_SENT:
            assert self._chap is not None
            if resp.transit:
                raise AuthenticationError("target ended the security stage before CHAP finished")
            reply = self._chap.respond(keys)
            self._auth = _Auth.CHAP_R_SENT
            return self._send_text(answers + reply, transit=True, nsg=Stage.OPERATIONAL)
        if self._auth is _Auth.CHAP_R_SENT:
            assert self._chap is not None
            self._chap.verify(keys)
            self._auth = _Auth.DONE
            self._authenticated = True
            return self._after_auth(resp, answers)
        return self._after_auth(resp, answers)

    def _after_auth(self, resp: LoginResponse, answers: Pairs) -> LoginStep:
        """Authentication is done: follow the target into the next stage."""
        if resp.transit:
            return self._enter(resp, resp.nsg, answers)
        return self._send_text(answers, transit=True, nsg=Stage.OPERATIONAL)

    def _enter(self, resp: LoginResponse, nsg: int, answers: Pairs) -> LoginStep:
        if nsg == Stage.FULL_FEATURE:
            return self._success(resp)
        if nsg != Stage.OPERATIONAL or self.stage != Stage.SECURITY:
            raise ProtocolError(f"target moves to stage {nsg} from {self.stage}")
        self.stage = Stage.OPERATIONAL
        return self._send_text(answers + self.negotiator.offer(), transit=True,
                               nsg=Stage.FULL_FEATURE)

    def _operational(self, resp: LoginResponse, pairs: Pairs) -> LoginStep:
        answers = self.negotiator.receive(pairs)
        if resp.transit:
            if resp.nsg != Stage.FULL_FEATURE:
                raise ProtocolError(f"target moves to stage {resp.nsg} from operational")
            return self._success(resp)
        # The target wants another round (its own offers, or it is not ready).
        return self._send_text(answers, transit=True, nsg=Stage.FULL_FEATURE)

    def _success(self, resp: LoginResponse) -> LoginSuccess:
        if self.config.auth_required and not self._authenticated:
            raise AuthenticationError("target skipped required authentication")
        if self.config.tsih == 0 and resp.tsih == 0 and not self.config.discovery:
            raise ProtocolError("final Login Response of a new session has TSIH 0 (§11.13.6)")
        params = self.negotiator.result()
        self.finished = True
        return LoginSuccess(
            params=params, isid=self.isid, tsih=resp.tsih, cid=self.config.cid,
            cmdsn=resp.exp_cmdsn, exp_cmdsn=resp.exp_cmdsn, max_cmdsn=resp.max_cmdsn,
            exp_statsn=self._exp_statsn, authenticated=self._authenticated,
            chap_algorithm=self._chap.algorithm if self._chap is not None else None,
        )


__all__ = [
    "LOGIN_MAX_DATA", "LOGIN_STATUS", "LoginConfig", "LoginMachine", "LoginRedirect",
    "LoginStep", "LoginSuccess", "login_error", "random_isid",
]
