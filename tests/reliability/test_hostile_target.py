"""A hostile target against the whole session (fake clock, in-process scripted target).

What tests/unit/test_session.py already covers is not repeated here (Data-In beyond the
expected length, DataSN gaps, R2T beyond the expected length or too many R2Ts, header
digest errors, a data digest error retried once, a frozen window). This file fills the
gaps of issue 7: PDUs above our MaxRecvDataSegmentLength, hostile Data-In variants with
the caller's buffer in the middle of a bigger one, sequence numbers jumping, unknown and
misplaced opcodes, persistent data digest errors, endless NOP-In, logins and text
exchanges that never end, and hostile CHAP. Each case must end in a clear, typed error
or a correct recovery, in bounded (simulated) time, with bounded state, and without a
byte written outside the requested range.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from bootinit.iscsi.chap import ChapAlgorithm, ChapCredentials, Secret, chap_response
from bootinit.iscsi.errors import (
    AuthenticationError,
    DataSegmentTooLong,
    IscsiError,
    KeyFormatError,
    ProtocolError,
)
from bootinit.iscsi.keys import OperationalConfig, decode_text, encode_text
from bootinit.iscsi.pdu import (
    R2T,
    RESERVED_TAG,
    DataIn,
    LoginRequest,
    LoginResponse,
    NopIn,
    Pdu,
    ScsiCommand,
    TaskMgmtRequest,
    TaskMgmtResponse,
    TextRequest,
    TextResponse,
    TmfFunction,
    TmfResponse,
    encode_bytes,
)
from bootinit.iscsi.recovery import RecoveryPolicy
from bootinit.iscsi.session import SessionState
from bootinit.iscsi.task import (
    CommandTimeout,
    ScsiRequest,
    SessionFailed,
    TargetProtocolError,
    Task,
)
from bootinit.scsi import cdb
from tests.unit.fake_target import FakeTarget, Harness, TargetSettings

BS = 512
FILL = 0xEE


@pytest.fixture(autouse=True)
def _quiet() -> Iterator[None]:
    logging.disable(logging.CRITICAL)
    yield
    logging.disable(logging.NOTSET)


def pattern(n: int, seed: int = 0) -> bytes:
    return bytes((i * 13 + seed) & 0xFF for i in range(n))


class Guarded:
    """A read buffer in the middle of a bigger one, to see stray writes."""

    def __init__(self, blocks: int, pad: int = 4 * BS) -> None:
        self.pad = pad
        self.size = blocks * BS
        self.raw = bytearray([FILL]) * (pad + self.size + pad)
        self.view = memoryview(self.raw)[pad:pad + self.size]

    def outside_untouched(self) -> bool:
        return (self.raw[:self.pad] == bytes([FILL]) * self.pad
                and self.raw[self.pad + self.size:] == bytes([FILL]) * self.pad)


def read(h: Harness, lba: int, g: Guarded) -> Task:
    return h.session.submit(ScsiRequest(cdb.read_cdb(lba, g.size // BS), read_into=g.view),
                            now=h.now)


def setup(target: FakeTarget | None = None, **kw: Any) -> tuple[FakeTarget, Harness]:
    t = target or FakeTarget()
    t.luns[0].write(0, pattern(64 * BS))
    h = Harness(t, **kw)
    h.login()
    return t, h


def inject(h: Harness, *pdus: Pdu, header_digest: bool = False,
           data_digest: bool = False) -> None:
    """Hand target PDUs straight to the session (bypassing the fake target)."""
    raw = b"".join(encode_bytes(p, header_digest=header_digest, data_digest=data_digest)
                   for p in pdus)
    h.session.receive(raw, h.now)
    h.settle()


# ------------------------------------------------ data segments and Data-In


def test_pdu_larger_than_our_max_recv_data_segment_length_drops_and_recovers() -> None:
    t, h = setup(operational=OperationalConfig(max_recv_data_segment_length=4096))
    s = h.session
    t.hold = True
    g = Guarded(4)
    r = read(h, 0, g)
    h.settle()
    itt = t.held[0].itt
    # one Data-In of 8 KiB although we declared MaxRecvDataSegmentLength=4096
    inject(h, DataIn(itt=itt, datasn=0, buffer_offset=0, data=b"\x11" * 8192,
                     exp_cmdsn=t.exp_cmdsn, max_cmdsn=t.max_cmdsn))
    assert s.counters.get("errors", "protocol") == 1
    t.hold = False
    h.run_until(lambda: r.done)
    # the connection was dropped (nothing of the oversized PDU was placed) and the read
    # was replayed on the new connection
    assert r.error is None and bytes(g.view) == pattern(4 * BS)
    assert g.outside_untouched()
    assert s.counters.get("recovery", "succeeded") == 1


def _hostile_datain(kind: str) -> Callable[[ScsiCommand, list[DataIn]], list[DataIn]]:
    def hook(cmd: ScsiCommand, pdus: list[DataIn]) -> list[DataIn]:
        n = cmd.expected_length
        if kind == "beyond":
            extra = DataIn(itt=cmd.itt, datasn=len(pdus), buffer_offset=n, data=b"\x11" * BS)
            return [*pdus, extra]
        if kind == "offset_past_end":
            return [DataIn(itt=cmd.itt, datasn=0, buffer_offset=n - 4, data=b"\x11" * 8)]
        if kind == "huge_offset":
            return [DataIn(itt=cmd.itt, datasn=0, buffer_offset=0xFFFFFFF0, data=b"\x11" * 32)]
        if kind == "wrong_offset":
            return [DataIn(itt=cmd.itt, datasn=0, buffer_offset=BS, data=b"\x11" * BS)]
        if kind == "datasn_jump":
            return [DataIn(itt=cmd.itt, datasn=7, buffer_offset=0, data=b"\x11" * BS)]
        if kind == "duplicate":
            first = pdus[0]
            again = DataIn(itt=cmd.itt, datasn=1, buffer_offset=0, data=first.data)
            return [first, again, *pdus[1:]]
        if kind == "other_itt":
            return [DataIn(itt=cmd.itt ^ 0x5A5A, datasn=0, buffer_offset=0, data=b"\x11" * BS)]
        raise AssertionError(kind)

    return hook


@pytest.mark.parametrize("kind", ["beyond", "offset_past_end", "huge_offset", "wrong_offset",
                                  "datasn_jump", "duplicate", "other_itt"])
def test_hostile_data_in_never_writes_outside_the_requested_range(kind: str) -> None:
    t, h = setup(operational=OperationalConfig(max_recv_data_segment_length=1024))
    t.datain_hook = _hostile_datain(kind)
    g = Guarded(4)
    r = read(h, 0, g)
    h.run_until(lambda: r.done)
    assert g.outside_untouched()
    assert isinstance(r.error, TargetProtocolError | SessionFailed), r.error
    # the session recovers and the same read is then served right
    t.datain_hook = None
    g2 = Guarded(4)
    r2 = read(h, 0, g2)
    h.run_until(lambda: r2.done)
    assert r2.error is None and bytes(g2.view) == pattern(4 * BS) and g2.outside_untouched()
    assert h.session.outstanding() == 0


def test_r2t_offset_overflowing_32_bits_is_refused() -> None:
    t, h = setup()
    t.hold = True
    w = h.session.submit(ScsiRequest(cdb.write_cdb(0, 16), write_data=pattern(16 * BS)),
                         now=h.now)
    h.settle()
    before = h.to_target
    inject(h, R2T(itt=t.held[0].itt, ttt=0x77, r2tsn=0, buffer_offset=0xFFFFFF00,
                  desired_length=0x200, exp_cmdsn=t.exp_cmdsn, max_cmdsn=t.max_cmdsn))
    # no Data-Out was built from outside the caller's data
    assert h.to_target - before < 48 * 4
    t.hold = False
    h.run_until(lambda: w.done)
    assert isinstance(w.error, TargetProtocolError) and w.error.field == "BufferOffset"


def test_r2t_with_the_reserved_target_transfer_tag_is_refused() -> None:
    t, h = setup()
    t.hold = True
    w = h.session.submit(ScsiRequest(cdb.write_cdb(0, 256), write_data=pattern(256 * BS)),
                         now=h.now)
    h.settle()
    before = h.to_target
    inject(h, R2T(itt=t.held[0].itt, ttt=RESERVED_TAG, r2tsn=0, buffer_offset=65536,
                  desired_length=4096, exp_cmdsn=t.exp_cmdsn, max_cmdsn=t.max_cmdsn))
    # refused by the PDU decoder (§11.8.4): the stream is dropped before any Data-Out
    # could read as unsolicited data; the write is replayed on a new connection
    assert h.to_target - before < 4096
    assert h.session.counters.get("errors", "protocol") == 1
    t.hold = False
    h.run_until(lambda: w.done)
    assert w.error is None and t.luns[0].read(0, 256) == pattern(256 * BS)


# ------------------------------------------------------------ sequence numbers


@pytest.mark.parametrize("kind", ["statsn_back", "statsn_far", "maxcmdsn_back",
                                  "expcmdsn_far", "window_inverted"])
def test_sequence_numbers_jumping_do_not_hang_or_break_the_window(kind: str) -> None:
    t, h = setup(command_timeout=5.0, nop_interval=2.0, nop_timeout=3.0)
    s = h.session
    orig_send = t.send

    def lying_send(pdu: Pdu, *, advance: bool = True) -> None:
        orig_send(pdu, advance=advance)
        if not hasattr(pdu, "exp_cmdsn"):
            return
        p = pdu
        if kind == "statsn_back" and hasattr(p, "statsn"):
            p.statsn = (p.statsn - 1000) & 0xFFFFFFFF
        elif kind == "statsn_far" and hasattr(p, "statsn"):
            p.statsn = (p.statsn + 0x7FFF0000) & 0xFFFFFFFF
        elif kind == "maxcmdsn_back":
            p.max_cmdsn = (t.exp_cmdsn - 50) & 0xFFFFFFFF  # type: ignore[attr-defined]
        elif kind == "expcmdsn_far":
            p.exp_cmdsn = (t.exp_cmdsn + 0x10000) & 0xFFFFFFFF
            p.max_cmdsn = (t.exp_cmdsn + 0x10010) & 0xFFFFFFFF  # type: ignore[attr-defined]
        elif kind == "window_inverted":
            p.exp_cmdsn = (t.exp_cmdsn + 100) & 0xFFFFFFFF
            p.max_cmdsn = t.exp_cmdsn  # type: ignore[attr-defined]
        # re-encode the PDU as lied about
        del t.out[-len(encode_bytes(pdu, header_digest=t.hd, data_digest=t.dd)):]
        t._send(pdu)

    t.send = lying_send  # type: ignore[method-assign]
    tasks = []
    bufs = []
    for i in range(8):
        g = Guarded(2)
        bufs.append(g)
        tasks.append(read(h, i * 2, g))
    h.run_until(lambda: all(x.done for x in tasks) or s.finished, 900)
    assert all(g.outside_untouched() for g in bufs)
    for x, g in zip(tasks, bufs, strict=True):
        if x.error is None:
            assert bytes(g.view) == t.luns[0].read(tasks.index(x) * 2, 2)
        else:
            assert isinstance(x.error, IscsiError), x.error
    # never a command outside the window the target really had open
    assert not [v for v in t.violations if "outside window" in v], t.violations
    assert s.outstanding() == 0 or s.finished


# -------------------------------------------------------------------- opcodes


@pytest.mark.parametrize("opcode", [0x1C, 0x2F, 0x3C, 0x3E, 0x02])
def test_unknown_opcode_drops_the_connection_and_recovers(opcode: int) -> None:
    _t, h = setup()
    s = h.session
    bhs = bytearray(48)
    bhs[0] = opcode
    s.receive(bytes(bhs), h.now)
    assert s.counters.get("errors", "protocol") == 1
    g = Guarded(2)
    r = read(h, 0, g)
    h.run_until(lambda: r.done)
    assert r.error is None and bytes(g.view) == pattern(2 * BS)
    assert s.counters.get("recovery", "succeeded") == 1


def test_login_response_in_the_full_feature_phase_is_a_protocol_error() -> None:
    t, h = setup()
    s = h.session
    inject(h, LoginResponse(itt=0, statsn=t.statsn, exp_cmdsn=t.exp_cmdsn,
                            max_cmdsn=t.max_cmdsn))
    assert s.counters.get("errors", "protocol") == 1
    g = Guarded(1)
    r = read(h, 0, g)
    h.run_until(lambda: r.done)
    assert r.error is None


# --------------------------------------------------------------------- digests


def test_persistent_data_digest_errors_fail_the_read_after_bounded_retries() -> None:
    settings = TargetSettings(header_digest=True, data_digest=True)
    t = FakeTarget(settings=settings)
    op = OperationalConfig(header_digest=("CRC32C",), data_digest=("CRC32C",))
    t, h = setup(t, operational=op, retries=3)
    t.corrupt_data_digest = 1000
    g = Guarded(4)
    r = read(h, 0, g)
    h.run_until(lambda: r.done)
    assert isinstance(r.error, IscsiError) and "digest" in str(r.error)
    assert h.session.counters.get("commands", "retried_digest") == 3
    assert g.outside_untouched()
    t.corrupt_data_digest = 0
    g2 = Guarded(4)
    r2 = read(h, 0, g2)
    h.run_until(lambda: r2.done)
    assert r2.error is None and bytes(g2.view) == pattern(4 * BS)


# ------------------------------------------------------------------- NOP flood


def test_endless_nop_in_does_not_keep_a_dead_target_alive_forever() -> None:
    """A target that answers no command but floods NOP-Ins (some asking for an answer):
    every NOP-In with a TTT is answered once, commands time out, are aborted, the
    connection is dropped and recovery gives up at its deadline: FAILED, bounded."""
    policy = RecoveryPolicy(deadline=60.0, initial_deadline=10.0)
    t, h = setup(command_timeout=4.0, tmf_timeout=2.0, recovery=policy)
    s = h.session
    t.hold = True
    t.tmf_response = None
    t._tmf = lambda req: None  # type: ignore[method-assign]
    g = Guarded(2)
    r = read(h, 0, g)
    h.settle()
    sent_nops = 0
    answered_before = s.counters.get("nop", "target_pings_answered")
    end = h.now + 600
    while not r.done and h.now < end:
        if h.up and t.logged_in:
            for i in range(50):
                t.send(NopIn(itt=RESERVED_TAG, ttt=0x100 + i if i % 2 else RESERVED_TAG))
                sent_nops += 1
        h.settle()
        assert len(s._out) < 200 and len(s._active) <= 1
        h.now += 0.5
        s.on_deadline(h.now)
    assert r.done, "the task never ended"
    assert isinstance(r.error, IscsiError)
    answered = s.counters.get("nop", "target_pings_answered") - answered_before
    assert 0 < answered <= sent_nops // 2 + 1
    assert g.outside_untouched()


# --------------------------------------------------------------- endless login


class ScriptedLogin(FakeTarget):
    """A FakeTarget whose security stage (CSG=0) is scripted by ``security``."""

    def __init__(self, security: Callable[[ScriptedLogin, LoginRequest], LoginResponse | None],
                 **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        self.security = security
        self.login_requests = 0

    def _login(self, req: LoginRequest) -> None:
        self.login_requests += 1
        if req.csg == 0:
            resp = self.security(self, req)
            if resp is not None:
                self._send(resp)
                return
        super()._login(req)


def _resp(t: FakeTarget, req: LoginRequest, pairs: list[tuple[str, str]], *,
          transit: bool = False, nsg: int = 0, cont: bool = False,
          data: bytes | None = None) -> LoginResponse:
    return LoginResponse(transit=transit, cont=cont, csg=req.csg, nsg=nsg if transit else 0,
                         isid=req.isid, tsih=0, itt=req.itt, statsn=t._stat(),
                         exp_cmdsn=req.cmdsn, max_cmdsn=req.cmdsn + 8,
                         data=encode_text(pairs) if data is None else data)


def _login_session(t: FakeTarget, **kw: Any) -> Harness:
    kw.setdefault("recovery", RecoveryPolicy(deadline=30.0, initial_deadline=20.0))
    h = Harness(t, **kw)
    h.run_until(lambda: h.session.ready or h.session.finished, 300)
    return h


def test_login_that_never_ends_fails_cleanly() -> None:
    # every response says "not yet" (T=0): the login machine gives up after its bound
    t = ScriptedLogin(lambda tg, req: _resp(tg, req, []))
    h = _login_session(t)
    s = h.session
    assert s.state is SessionState.FAILED
    assert isinstance(s.error, SessionFailed) and isinstance(s.error.cause, ProtocolError)
    assert t.login_requests <= 65


def test_silent_login_times_out_and_gives_up_at_the_deadline() -> None:
    t = ScriptedLogin(lambda tg, req: None)
    t._login = lambda req: None  # type: ignore[method-assign]
    h = _login_session(t, login_timeout=3.0)
    s = h.session
    assert s.state is SessionState.FAILED and isinstance(s.error, SessionFailed)
    assert h.now - 1000.0 < 60.0
    assert s.counters.get("login", "failures_timeout") >= 1


def test_login_text_with_never_ending_continuation_is_bounded() -> None:
    # C=1 forever with data: the text limit (64 KiB) ends it
    t = ScriptedLogin(lambda tg, req: _resp(tg, req, [], cont=True, data=b"X" * 4000))
    h = _login_session(t)
    assert h.session.state is SessionState.FAILED
    assert isinstance(h.session.error, SessionFailed)
    assert isinstance(h.session.error.cause, KeyFormatError | ProtocolError)
    assert t.login_requests <= 65


def test_login_text_continuation_with_empty_segments_is_bounded() -> None:
    t = ScriptedLogin(lambda tg, req: _resp(tg, req, [], cont=True, data=b""))
    h = _login_session(t)
    assert h.session.state is SessionState.FAILED
    assert t.login_requests <= 65


def test_send_targets_text_that_never_ends_fails_the_exchange() -> None:
    t = FakeTarget()
    h = Harness(t, discovery=True, target_name=None)
    h.login()
    s = h.session
    responses = 0

    def endless(pdu: Pdu) -> None:
        nonlocal responses
        if isinstance(pdu, TextRequest):
            responses += 1
            t.send(TextResponse(itt=pdu.itt, final=False, cont=True, ttt=0x33,
                                data=b"TargetName=iqn.x:" + b"y" * 200))
            return
        orig(pdu)

    orig = t._dispatch
    t._dispatch = endless  # type: ignore[method-assign]
    op = s.send_targets(now=h.now)
    h.run_until(lambda: op.done or s.finished, 900)
    assert op.done and isinstance(op.error, ProtocolError), op.error
    # bounded by the exchange limit; the exchange fails, the session stays (no reconnect
    # that would replay the same exchange)
    assert responses <= 1025
    assert s.ready and s.counters.get("recovery", "started") == 0
    assert s.counters.get("errors", "text") == 1


# ------------------------------------------------------------------------ CHAP


def _chap_target(challenge: bytes, algorithm: str = "5", *,
                 mutual_secret: bytes | None = None) -> ScriptedLogin:
    def security(t: ScriptedLogin, req: LoginRequest) -> LoginResponse | None:
        keys = dict(decode_text(req.data)) if req.data else {}
        if "AuthMethod" in keys:
            return _resp(t, req, [("AuthMethod", "CHAP")])
        if "CHAP_A" in keys:
            return _resp(t, req, [], data=encode_text([("CHAP_A", algorithm), ("CHAP_I", "1")])
                         + b"CHAP_C=0x" + challenge.hex().encode() + b"\0")
        if "CHAP_R" in keys:
            pairs: list[tuple[str, str]] = []
            if "CHAP_C" in keys and mutual_secret is not None:
                their_c = bytes.fromhex(keys["CHAP_C"][2:])
                r = chap_response(ChapAlgorithm(int(algorithm)), int(keys["CHAP_I"]),
                                  mutual_secret, their_c)
                pairs = [("CHAP_N", "tgt"), ("CHAP_R", "0x" + r.hex())]
            return _resp(t, req, pairs, transit=True, nsg=1)
        return None

    return ScriptedLogin(security)


ONE_WAY = ChapCredentials("alice", Secret("alice-secret-1"))
MUTUAL = ChapCredentials("alice", Secret("alice-secret-1"), target_username="tgt",
                         target_secret=Secret("target-secret-9"))


def test_chap_scripted_target_logs_in() -> None:
    h = _login_session(_chap_target(b"\x42" * 16), chap=ONE_WAY)
    assert h.session.ready
    h2 = _login_session(_chap_target(b"\x42" * 16, mutual_secret=b"target-secret-9"),
                        chap=MUTUAL)
    assert h2.session.ready


def test_absurd_chap_challenge_is_refused_at_once() -> None:
    # 4000 bytes fit a login PDU but not the 1024-byte CHAP bound: refused, not retried
    h = _login_session(_chap_target(b"\x42" * 4000), chap=ONE_WAY)
    s = h.session
    assert s.state is SessionState.FAILED and isinstance(s.error, SessionFailed)
    assert isinstance(s.error.cause, KeyFormatError) and "CHAP_C" in str(s.error)
    assert s.counters.get("login", "attempts") == 1
    assert "alice-secret-1" not in str(s.error)


def test_chap_challenge_beyond_the_login_pdu_limit_is_bounded() -> None:
    # 20000 bytes: the PDU is beyond MaxRecvDataSegmentLength (8192 during login); the
    # stream is dropped (nothing of it buffered) and retried until the login deadline
    h = _login_session(_chap_target(b"\x42" * 20000), chap=ONE_WAY)
    s = h.session
    assert s.state is SessionState.FAILED and isinstance(s.error, SessionFailed)
    assert isinstance(s.error.cause, DataSegmentTooLong)
    assert h.now - 1000.0 <= 20.0 + 1.0  # the initial login deadline
    assert 1 < s.counters.get("login", "attempts") < 20


def test_chap_algorithm_we_did_not_offer_is_refused() -> None:
    h = _login_session(_chap_target(b"\x42" * 16, algorithm="4"), chap=ONE_WAY)
    s = h.session
    assert s.state is SessionState.FAILED
    assert isinstance(s.error, SessionFailed) and isinstance(s.error.cause, AuthenticationError)


def test_mutual_chap_target_without_the_secret_is_refused() -> None:
    h = _login_session(_chap_target(b"\x42" * 16, mutual_secret=b"a-guess-of-the-secret"),
                       chap=MUTUAL)
    s = h.session
    assert s.state is SessionState.FAILED
    assert isinstance(s.error, SessionFailed) and isinstance(s.error.cause, AuthenticationError)
    assert "target-secret-9" not in str(s.error) and "alice-secret-1" not in str(s.error)
    # not retried: one login attempt
    assert s.counters.get("login", "attempts") == 1


# ------------------------------------------------------- task management races


def test_task_cleared_by_another_lun_reset_is_not_sent_again_after_it_failed() -> None:
    """Regression (found by the session fuzzer): two commands on one LUN time out, the
    target refuses both ABORT TASKs, so each gets a LOGICAL UNIT RESET. The first reset
    completes and cleared the second command too; it was put back in the queue although
    its own reset was still outstanding. That reset's answer then failed it (the caller
    was told "timed out") while it sat in the queue, and it was sent again: a write the
    caller believed failed reached the disk later, from a buffer the caller may reuse."""
    t, h = setup(command_timeout=5.0, tmf_timeout=3.0)
    s = h.session
    t.hold = True

    def tmf(req: TaskMgmtRequest) -> None:
        if req.function == TmfFunction.ABORT_TASK:
            t.send(TaskMgmtResponse(itt=req.itt, response=TmfResponse.REJECTED))
        else:
            t.held = [c for c in t.held if c.lun != req.lun]
            t.send(TaskMgmtResponse(itt=req.itt, response=TmfResponse.COMPLETE))

    t._tmf = tmf  # type: ignore[method-assign]
    g = Guarded(2)
    r = read(h, 0, g)
    w = s.submit(ScsiRequest(cdb.write_cdb(8, 8), write_data=pattern(8 * BS, 9)), now=h.now)
    h.run_until(lambda: r.done and w.done, 120)
    h.advance(30.0)  # anything still queued would go out now
    assert isinstance(r.error, CommandTimeout) and isinstance(w.error, CommandTimeout)
    writes = [c for c in t.commands if c.cdb[0] == 0x2A]
    assert len(writes) == 1, "a write reported as failed was sent again"
    assert s.outstanding() == 0 and not s._pending and not s._tmfs
    assert g.outside_untouched()
