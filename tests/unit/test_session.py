"""The pure session against the scripted fake target, with a fake clock (RFC 7143)."""

from __future__ import annotations

import os

import pytest

from bootinit.iscsi.keys import OperationalConfig
from bootinit.iscsi.pdu import (
    R2T,
    AsyncEvent,
    DataIn,
    DataOut,
    LogoutRequest,
    NopIn,
    NopOut,
    RejectReason,
    ScsiCommand,
    TaskMgmtRequest,
    TmfFunction,
    TmfResponse,
)
from bootinit.iscsi.recovery import LunIdentity, RecoveryPolicy, identity_from_vpd
from bootinit.iscsi.session import SessionState
from bootinit.iscsi.task import (
    CommandTimeout,
    LunChangedError,
    ScsiRequest,
    SessionFailed,
    TargetProtocolError,
    Task,
    TaskRejected,
)
from bootinit.iscsi.text import Portal
from bootinit.scsi import cdb
from bootinit.scsi.sense import ScsiError, SenseKey
from tests.unit.fake_target import FakeLun, FakeTarget, Harness, TargetSettings, fixed_sense

BS = 512


def pattern(n: int, seed: int = 0) -> bytes:
    return bytes((i * 7 + seed) & 0xFF for i in range(n))


def read(h: Harness, lba: int, blocks: int, lun: int = 0) -> Task:
    buf = bytearray(blocks * BS)
    return h.session.submit(ScsiRequest(cdb.read_cdb(lba, blocks), lun=lun, read_into=buf),
                            now=h.now)


def write(h: Harness, lba: int, data: bytes, lun: int = 0) -> Task:
    return h.session.submit(ScsiRequest(cdb.write_cdb(lba, len(data) // BS), lun=lun,
                                        write_data=data), now=h.now)


def done(*tasks: Task) -> bool:
    return all(t.done for t in tasks)


def buf_of(t: Task) -> bytes:
    assert t.request.read_into is not None
    return bytes(t.request.read_into)


# ---------------------------------------------------------------- basics


def test_login_and_io_round_trip() -> None:
    t = FakeTarget()
    h = Harness(t)
    s = h.login()
    assert s.state is SessionState.FULL_FEATURE and s.tsih != 0
    data = pattern(300 * BS)
    w = write(h, 10, data)
    h.run_until(lambda: w.done)
    w.check()
    r = read(h, 10, 300)
    h.run_until(lambda: r.done)
    assert r.check().transferred == len(data) and buf_of(r) == data
    assert t.violations == []
    c = s.counters.as_dict()
    assert c["commands"]["completed"] == 2
    assert c["pdus_out"]["scsi_command"] == 2 and c["bytes_in"]["data_in"] > len(data)
    assert c["latency"]["count"] == 2


@pytest.mark.parametrize("digests", [False, True])
def test_chunked_input_and_digests(digests: bool) -> None:
    settings = TargetSettings(header_digest=digests, data_digest=digests)
    t = FakeTarget(settings=settings)
    op = OperationalConfig(header_digest=("CRC32C", "None"), data_digest=("CRC32C", "None"))
    h = Harness(t, chunk=97, operational=op)
    s = h.login()
    assert s.params is not None and s.params.header_digest is digests
    data = os.urandom(64 * BS)
    w = write(h, 0, data)
    h.run_until(lambda: w.done)
    r = read(h, 0, 64)
    h.run_until(lambda: r.done)
    assert buf_of(r) == data and t.violations == []


@pytest.mark.parametrize("digests", [False, True])
@pytest.mark.parametrize("in_order", [True, False])
@pytest.mark.parametrize("chunk", [1, 97, 5000])
def test_batched_chunks_same_as_one_by_one(digests: bool, in_order: bool, chunk: int) -> None:
    """receive_chunks (one TCP batch) gives the same data and counters as feeding every
    piece alone: reads of several Data-In PDUs each, in or out of order, queue depth 8."""
    results = []
    for batch in (False, True):
        settings = TargetSettings(header_digest=digests, data_digest=digests,
                                  data_pdu_in_order=in_order)
        t = FakeTarget(settings=settings)
        op = OperationalConfig(header_digest=("CRC32C", "None"),
                               data_digest=("CRC32C", "None"), data_pdu_in_order=in_order,
                               max_recv_data_segment_length=4096)
        h = Harness(t, chunk=chunk, batch=batch, operational=op, queue_depth=8)
        s = h.login()
        data = pattern(256 * BS, 11)
        t.luns[0].write(0, data)
        t.datain_reverse = not in_order
        reads = [read(h, lba, 16) for lba in range(0, 256, 16)]
        h.run_until(lambda reads=reads: done(*reads))  # type: ignore[misc]
        assert [buf_of(r) for r in reads] == [data[i * 16 * BS:(i + 1) * 16 * BS]
                                             for i in range(16)]
        assert t.violations == []
        c = s.counters.as_dict()
        results.append((c["commands"], c["pdus_in"], c.get("errors", {})))
    assert results[0] == results[1]


def test_batched_chunks_stray_data_in_after_status_never_lands() -> None:
    """A target bug: a second Data-In after the one with status, in the same batch. The
    buffer handed back complete is not written again; the stray PDU is counted stale."""
    t = FakeTarget()
    h = Harness(t, chunk=50, batch=True)
    s = h.login()
    data = pattern(4 * BS, 5)
    t.luns[0].write(0, data)

    def hook(cmd: ScsiCommand, pdus: list[DataIn]) -> list[DataIn]:
        pdus[-1].final = pdus[-1].status_present = True  # the real status...
        return [*pdus, DataIn(itt=cmd.itt, datasn=len(pdus), buffer_offset=0,
                              data=b"\x99" * BS)]  # ...then a stray one (gets S too)

    t.datain_hook = hook
    r = read(h, 0, 4)
    h.run_until(lambda: r.done)
    assert r.error is None and buf_of(r) == data
    assert s.counters.get("errors", "stale_pdus") == 1


def test_batched_chunks_bad_pdu_after_good_ones() -> None:
    """PDUs parsed before a fatal parse error in the same batch are processed first (the
    task they complete completes); then the connection is dropped and I/O goes on."""
    t = FakeTarget()
    h = Harness(t, chunk=30, batch=True)
    s = h.login()
    data = pattern(2 * BS, 6)
    t.luns[0].write(0, data)
    r = read(h, 0, 2)
    h.settle()
    t.out += b"\xff" * 48  # an unknown opcode right behind the Data-In with status
    h.run_until(lambda: r.done)
    assert r.error is None and buf_of(r) == data
    r2 = read(h, 0, 2)
    h.run_until(lambda: r2.done)
    assert r2.error is None and buf_of(r2) == data
    assert len(h.connects) == 2 and s.counters.get("commands", "completed") == 2


def test_data_in_split_across_pdus_of_our_mrdsl() -> None:
    t = FakeTarget()
    h = Harness(t, operational=OperationalConfig(max_recv_data_segment_length=4096))
    h.login()
    t.luns[0].write(0, pattern(40 * BS, 3))
    r = read(h, 0, 40)
    h.run_until(lambda: r.done)
    assert buf_of(r) == pattern(40 * BS, 3)
    datains = [p for p in t.received if isinstance(p, ScsiCommand)]
    assert datains and h.session.counters.get("pdus_in", "data_in") == 5


# ------------------------------------------------------------ CmdSN window


def test_commands_wait_for_the_cmdsn_window() -> None:
    t = FakeTarget(window=2)
    h = Harness(t)
    h.login()
    t.hold = True
    tasks = [read(h, i, 1) for i in range(6)]
    h.settle()
    assert len(t.held) == 2  # MaxCmdSN - ExpCmdSN + 1 = 2
    t.release()
    t.hold = True
    h.settle()
    assert len(t.held) == 2 and len(t.commands) == 4
    t.release()
    h.run_until(lambda: done(*tasks))
    assert all(x.error is None for x in tasks)
    assert t.violations == []
    sns = [c.cmdsn for c in t.commands]
    assert sns == list(range(sns[0], sns[0] + 6))


def test_frozen_max_cmdsn_then_reopened_by_nop_in() -> None:
    t = FakeTarget(window=4)
    h = Harness(t, command_timeout=30.0)
    h.login()
    t.max_cmdsn_override = t.max_cmdsn  # MaxCmdSN no longer advances (§4.2.2.1)
    t.hold = True
    tasks = [read(h, i, 1) for i in range(5)]
    h.settle()
    t.release()
    h.settle()
    assert len(t.commands) == 4 and not tasks[4].done
    h.advance(5.0)
    assert len(t.commands) == 4
    t.max_cmdsn_override = None
    t.send(NopIn())  # an unsolicited NOP-In opening the window
    h.run_until(lambda: done(*tasks))
    assert all(x.error is None for x in tasks) and t.violations == []


def test_window_closed_forever_recovers_then_fails() -> None:
    t = FakeTarget()
    h = Harness(t, command_timeout=4.0, nop_timeout=2.0,
                recovery=RecoveryPolicy(deadline=20.0, backoff_max=2.0))
    t.window = 0  # every login and every PDU: MaxCmdSN = ExpCmdSN - 1
    h.login()
    r = read(h, 0, 1)
    h.run_until(lambda: r.done, 200)
    assert isinstance(r.error, SessionFailed)
    assert h.session.counters.get("recovery", "started") >= 1


def test_queue_depth_limits_outstanding_commands() -> None:
    t = FakeTarget()
    h = Harness(t, queue_depth=3)
    h.login()
    t.hold = True
    tasks = [read(h, i, 1) for i in range(7)]
    h.settle()
    assert len(t.held) == 3
    t.release()
    h.run_until(lambda: done(*tasks))
    assert all(x.error is None for x in tasks)


# ------------------------------------------------------------------ writes


def _write_case(settings: TargetSettings, op: OperationalConfig, nbytes: int
                ) -> tuple[FakeTarget, Harness]:
    t = FakeTarget(settings=settings)
    h = Harness(t, operational=op)
    h.login()
    data = os.urandom(nbytes)
    w = write(h, 8, data)
    h.run_until(lambda: w.done)
    w.check()
    assert t.luns[0].read(8, nbytes // BS) == data
    assert t.violations == []
    return t, h


def test_r2t_bursts_respect_max_burst_length() -> None:
    t, h = _write_case(TargetSettings(max_burst=16384, first_burst=8192, max_recv_dsl=4096,
                                      initial_r2t=True, immediate_data=False),
                       OperationalConfig(initial_r2t=True, immediate_data=False), 100 * BS)
    cmd = next(p for p in t.received if isinstance(p, ScsiCommand) and p.write)
    assert cmd.data_length == 0 and cmd.final
    outs = [p for p in t.received if isinstance(p, DataOut)]
    assert all(p.data_length <= 4096 for p in outs)
    assert h.session.counters.get("data", "r2t") == -(-100 * BS // 16384)


def test_immediate_and_unsolicited_data_up_to_first_burst() -> None:
    t, _h = _write_case(TargetSettings(max_burst=65536, first_burst=20000, max_recv_dsl=8192),
                        OperationalConfig(), 200 * BS)
    cmd = next(p for p in t.received if isinstance(p, ScsiCommand) and p.write)
    assert cmd.data_length == 8192 and not cmd.final  # immediate, unsolicited follows
    unsol = [p for p in t.received if isinstance(p, DataOut) and p.ttt == 0xFFFFFFFF]
    assert sum(p.data_length for p in unsol) == 20000 - 8192
    assert [p.datasn for p in unsol] == list(range(len(unsol))) and unsol[-1].final
    assert unsol[0].buffer_offset == 8192


def test_immediate_only_with_initial_r2t() -> None:
    t, _h = _write_case(TargetSettings(initial_r2t=True, first_burst=65536),
                        OperationalConfig(initial_r2t=True), 64 * BS)
    cmd = next(p for p in t.received if isinstance(p, ScsiCommand) and p.write)
    assert cmd.data_length == 8192 and cmd.final
    assert not [p for p in t.received if isinstance(p, DataOut) and p.ttt == 0xFFFFFFFF]


def test_small_write_entirely_immediate() -> None:
    t, _h = _write_case(TargetSettings(), OperationalConfig(), 8 * BS)
    assert not [p for p in t.received if isinstance(p, DataOut)]


def test_max_outstanding_r2t_greater_than_one() -> None:
    t, h = _write_case(TargetSettings(max_burst=8192, first_burst=8192, max_outstanding_r2t=4,
                                      initial_r2t=True, immediate_data=False),
                       OperationalConfig(max_outstanding_r2t=4, initial_r2t=True,
                                         immediate_data=False), 128 * BS)
    r2t_count = h.session.counters.get("data", "r2t")
    assert r2t_count == 128 * BS // 8192 and t.max_outstanding_seen == 4


def test_r2t_beyond_expected_length_fails_task() -> None:
    t = FakeTarget()
    h = Harness(t)
    h.login()

    def bad(cmd: ScsiCommand) -> bool:
        if cmd.write:
            t.send(R2T(itt=cmd.itt, ttt=5, r2tsn=0, buffer_offset=cmd.expected_length - 512,
                       desired_length=1024), advance=False)
            return True
        return False

    t.command_hook = bad
    w = write(h, 0, os.urandom(64 * BS))
    h.run_until(lambda: w.done)
    assert isinstance(w.error, TargetProtocolError) and w.error.field == "BufferOffset"


def test_too_many_outstanding_r2ts_is_a_protocol_error() -> None:
    t = FakeTarget(settings=TargetSettings(initial_r2t=True, immediate_data=False))
    h = Harness(t, operational=OperationalConfig(initial_r2t=True, immediate_data=False))
    h.login()

    def greedy(cmd: ScsiCommand) -> bool:
        if cmd.write:
            for i in range(2):
                t.send(R2T(itt=cmd.itt, ttt=10 + i, r2tsn=i, buffer_offset=i * 4096,
                           desired_length=4096), advance=False)
            return True
        return False

    t.command_hook = greedy
    w = write(h, 0, os.urandom(64 * BS))
    h.run_until(lambda: w.done)
    assert isinstance(w.error, TargetProtocolError) and "MaxOutstandingR2T" in str(w.error)


# ------------------------------------------------------------------- reads


def test_data_in_out_of_order_placed_by_offset() -> None:
    t = FakeTarget(settings=TargetSettings(data_pdu_in_order=False))
    h = Harness(t, operational=OperationalConfig(data_pdu_in_order=False,
                                                 max_recv_data_segment_length=4096))
    s = h.login()
    assert s.params is not None and not s.params.data_pdu_in_order
    data = pattern(64 * BS, 9)
    t.luns[0].write(0, data)
    t.datain_reverse = True
    r = read(h, 0, 64)
    h.run_until(lambda: r.done)
    assert buf_of(r) == data


def test_data_in_out_of_order_refused_when_in_order_negotiated() -> None:
    t = FakeTarget()
    h = Harness(t, operational=OperationalConfig(max_recv_data_segment_length=4096))
    h.login()
    t.datain_reverse = True
    r = read(h, 0, 64)
    h.run_until(lambda: r.done)
    assert isinstance(r.error, TargetProtocolError) and r.error.field == "BufferOffset"


def test_data_in_beyond_expected_length_never_written_outside_buffer() -> None:
    t = FakeTarget()
    h = Harness(t)
    h.login()
    big = bytearray(b"\xee" * (16 * BS))
    view = memoryview(big)[4 * BS:8 * BS]  # the task's buffer is the middle 4 blocks

    def hook(cmd: ScsiCommand, pdus: list[DataIn]) -> list[DataIn]:
        return [DataIn(itt=cmd.itt, datasn=0, buffer_offset=0, data=b"\x11" * (6 * BS))]

    t.datain_hook = hook
    r = h.session.submit(ScsiRequest(cdb.read_cdb(0, 4), read_into=view), now=h.now)
    h.run_until(lambda: r.done)
    assert isinstance(r.error, TargetProtocolError) and r.error.field == "BufferOffset"
    assert big[:4 * BS] == b"\xee" * (4 * BS) and big[8 * BS:] == b"\xee" * (8 * BS)
    # the connection was dropped and the session recovers for further I/O
    t.datain_hook = None
    r2 = read(h, 0, 1)
    h.run_until(lambda: r2.done)
    assert r2.error is None


def test_data_in_datasn_gap_is_an_error() -> None:
    t = FakeTarget()
    h = Harness(t, operational=OperationalConfig(max_recv_data_segment_length=4096))
    h.login()

    def hook(cmd: ScsiCommand, pdus: list[DataIn]) -> list[DataIn]:
        del pdus[1]
        for i, p in enumerate(pdus):
            p.buffer_offset = i * 4096 if i == 0 else p.buffer_offset
        return pdus

    t.datain_hook = hook
    r = read(h, 0, 32)
    h.run_until(lambda: r.done)
    assert isinstance(r.error, TargetProtocolError)
    assert r.error.field in ("DataSN", "BufferOffset")


def test_missing_data_with_good_status_is_an_error() -> None:
    t = FakeTarget()
    h = Harness(t, operational=OperationalConfig(max_recv_data_segment_length=4096))
    h.login()

    def hook(cmd: ScsiCommand, pdus: list[DataIn]) -> list[DataIn]:
        return pdus[:-1]  # status comes with the (new) last one: one PDU of data missing

    t.datain_hook = hook
    r = read(h, 0, 32)
    h.run_until(lambda: r.done)
    assert isinstance(r.error, TargetProtocolError) and "only" in str(r.error)


def test_residual_underflow_and_overflow() -> None:
    t = FakeTarget()
    h = Harness(t)
    h.login()
    buf = bytearray(255)
    inq = h.session.submit(ScsiRequest(cdb.inquiry(None, 255), read_into=buf), now=h.now)
    h.run_until(lambda: inq.done)
    res = inq.check()
    assert res.underflow and res.residual == 255 - 36 and res.transferred == 36
    small = bytearray(8)
    inq2 = h.session.submit(ScsiRequest(cdb.inquiry(None, 8), read_into=small), now=h.now)
    h.run_until(lambda: inq2.done)
    res2 = inq2.check()
    assert res2.overflow and res2.residual == 28
    assert bytes(small) == b"\x00\x00\x06\x02\x1f\x00\x00\x02"


def test_status_in_separate_scsi_response() -> None:
    t = FakeTarget()
    t.status_in_response = True
    h = Harness(t)
    h.login()
    t.luns[0].write(0, pattern(8 * BS))
    r = read(h, 0, 8)
    h.run_until(lambda: r.done)
    assert buf_of(r) == pattern(8 * BS)


# -------------------------------------------------------- status and sense


def test_sense_decoded_through_the_session() -> None:
    t = FakeTarget()
    h = Harness(t)
    h.login()
    r = read(h, 5000, 1)  # beyond the 2048-block LUN
    h.run_until(lambda: r.done)
    assert isinstance(r.error, ScsiError)
    assert r.error.sense is not None and r.error.sense.key == SenseKey.ILLEGAL_REQUEST
    assert "logical block address out of range" in str(r.error)
    assert r.result is not None and r.result.status == 2


def test_unit_attention_is_retried() -> None:
    t = FakeTarget()
    h = Harness(t)
    h.login()
    t.ua = {0}
    r = read(h, 0, 1)
    h.run_until(lambda: r.done)
    assert r.error is None and h.session.counters.get("commands", "retried") == 1
    assert len(t.commands) == 2


def test_retries_are_bounded() -> None:
    t = FakeTarget()
    h = Harness(t, retries=3)
    h.login()
    t.sense_hook = lambda cmd: fixed_sense(0x06, 0x29, 0x00)
    r = read(h, 0, 1)
    h.run_until(lambda: r.done)
    assert isinstance(r.error, ScsiError) and len(t.commands) == 4


def test_busy_is_retried_after_a_delay() -> None:
    t = FakeTarget()
    h = Harness(t)
    h.login()
    n = [0]

    def busy(cmd: ScsiCommand) -> bool:
        n[0] += 1
        if n[0] == 1:
            t.send(__import__("bootinit.iscsi.pdu", fromlist=["ScsiResponse"]).ScsiResponse(
                itt=cmd.itt, status=0x08))
            return True
        return False

    t.command_hook = busy
    start = h.now
    r = read(h, 0, 1)
    h.run_until(lambda: r.done)
    assert r.error is None and h.now > start


# ------------------------------------------------------------- NOP, timeouts


def test_target_nop_in_ping_is_answered() -> None:
    t = FakeTarget()
    h = Harness(t)
    h.login()
    t.send(NopIn(itt=0xFFFFFFFF, ttt=0x77, lun=0), advance=False)
    h.settle()
    answers = [p for p in t.received if isinstance(p, NopOut)]
    assert len(answers) == 1
    a = answers[0]
    assert a.ttt == 0x77 and a.itt == 0xFFFFFFFF and a.immediate
    assert h.session.counters.get("nop", "target_pings_answered") == 1


def test_idle_pings_answered_keep_the_session() -> None:
    t = FakeTarget()
    h = Harness(t, nop_interval=5.0, nop_timeout=10.0)
    s = h.login()
    h.advance(60.0)
    assert s.ready and s.counters.get("nop", "pings_sent") >= 5
    assert s.counters.get("nop", "pings_answered") == s.counters.get("nop", "pings_sent")


def test_nop_timeout_triggers_recovery_and_replay() -> None:
    t = FakeTarget()
    h = Harness(t, nop_interval=5.0, nop_timeout=10.0)
    s = h.login()
    t.answer_pings = False
    t.hold = True
    r = read(h, 0, 4)
    h.settle()
    assert len(t.held) == 1
    h.run_until(lambda: s.counters.get("recovery", "started") == 1, 30)
    assert s.counters.get("nop", "timeouts") == 1
    t.answer_pings = True
    t.hold = False
    h.run_until(lambda: r.done, 60)
    assert r.error is None and s.counters.get("recovery", "succeeded") == 1
    assert t.connections == 2 and s.counters.get("commands", "replayed") == 1


def test_command_timeout_aborts_the_task() -> None:
    t = FakeTarget()
    h = Harness(t, command_timeout=5.0)
    h.login()
    t.hold = True
    r = read(h, 0, 1)
    h.run_until(lambda: r.done, 30)
    assert isinstance(r.error, CommandTimeout) and "ABORT TASK" in str(r.error)
    tmfs = [p for p in t.received if isinstance(p, TaskMgmtRequest)]
    assert [x.function for x in tmfs] == [TmfFunction.ABORT_TASK]
    assert tmfs[0].referenced_task_tag == t.commands[0].itt
    assert tmfs[0].ref_cmdsn == t.commands[0].cmdsn


def test_failed_abort_escalates_to_lun_reset_and_other_tasks_are_retried() -> None:
    t = FakeTarget()
    h = Harness(t, command_timeout=5.0)
    h.login()
    t.hold = True
    r1 = read(h, 0, 1)
    h.advance(3.0)
    r2 = read(h, 1, 1)
    h.settle()
    t.tmf_response = TmfResponse.NOT_SUPPORTED

    def answer(req: TaskMgmtRequest) -> None:
        pass

    # ABORT TASK answered NOT SUPPORTED; the LU reset is answered COMPLETE
    orig = t._tmf

    def tmf(req: TaskMgmtRequest) -> None:
        t.tmf_response = None if req.function == TmfFunction.LOGICAL_UNIT_RESET else \
            TmfResponse.NOT_SUPPORTED
        orig(req)
        if req.function == TmfFunction.LOGICAL_UNIT_RESET:
            t.hold = False

    t._tmf = tmf  # type: ignore[method-assign]
    h.run_until(lambda: done(r1, r2), 60)
    assert isinstance(r1.error, CommandTimeout) and "LOGICAL UNIT RESET" in str(r1.error)
    assert r2.error is None  # cleared by the reset, sent again
    assert h.session.counters.get("commands", "lun_reset") == 1


# ------------------------------------------------------------ Reject, Async


def test_reject_fails_the_referenced_task() -> None:
    t = FakeTarget()
    h = Harness(t)
    h.login()

    def rej(cmd: ScsiCommand) -> bool:
        t.reject(cmd, RejectReason.INVALID_PDU_FIELD)
        return True

    t.command_hook = rej
    r = read(h, 0, 1)
    h.run_until(lambda: r.done)
    assert isinstance(r.error, TaskRejected) and "invalid pdu field" in str(r.error)
    assert h.session.ready


def test_async_logout_request_logs_out_and_back_in() -> None:
    t = FakeTarget()
    h = Harness(t)
    s = h.login()
    t.hold = True
    r = read(h, 0, 1)
    h.settle()
    t.async_message(AsyncEvent.LOGOUT_REQUEST, p3=5)
    h.settle()
    assert not [p for p in t.received if isinstance(p, LogoutRequest)]  # waits for r
    r_pending = read(h, 1, 1)  # new work waits for the re-login
    t.release()
    h.run_until(lambda: done(r, r_pending), 60)
    assert [p for p in t.received if isinstance(p, LogoutRequest)]
    assert r.error is None and r_pending.error is None
    assert t.connections == 2 and s.ready
    assert s.counters.get("async", "logout_request") == 1


def test_async_connection_drop_recovers() -> None:
    t = FakeTarget()
    h = Harness(t)
    s = h.login()
    t.async_message(AsyncEvent.CONNECTION_DROP, p2=1, p3=20)
    h.settle()
    t.dropped = True
    h.run_until(lambda: s.ready and t.connections == 2, 30)
    r = read(h, 0, 1)
    h.run_until(lambda: r.done)
    assert r.error is None


def test_logout_is_clean() -> None:
    t = FakeTarget()
    h = Harness(t)
    s = h.login()
    r = read(h, 0, 1)
    s.logout(h.now)
    h.run_until(lambda: s.finished)
    assert r.error is None and s.state is SessionState.CLOSED
    assert isinstance(t.received[-1], LogoutRequest)
    late = read(h, 0, 1)
    assert late.done and late.error is not None


# ----------------------------------------------------------------- recovery


def test_target_restart_mid_io_replays_reads_and_writes() -> None:
    t = FakeTarget()
    h = Harness(t, chunk=1000)
    s = h.login()
    data = os.urandom(256 * BS)
    t.hold = True
    w = write(h, 0, data)
    r = read(h, 1024, 16)
    t.luns[0].write(1024, pattern(16 * BS, 5))
    h.settle()
    t.restart()
    t.hold = False
    h.refuse_until = h.now + 7.0  # connection refused for a while: backoff
    h.run_until(lambda: done(w, r), 120)
    assert w.error is None and r.error is None
    assert t.luns[0].read(0, 256) == data and buf_of(r) == pattern(16 * BS, 5)
    c = s.counters.as_dict()
    assert c["recovery"]["started"] == 1 and c["recovery"]["succeeded"] == 1
    assert c["commands"]["replayed"] == 2 and len(h.connects) >= 3


def test_recovery_gives_up_at_the_deadline() -> None:
    t = FakeTarget()
    h = Harness(t, recovery=RecoveryPolicy(deadline=20.0))
    s = h.login()
    t.hold = True
    r = read(h, 0, 1)
    h.settle()
    t.restart()
    h.refuse_until = h.now + 1e9
    h.run_until(lambda: r.done, 100)
    assert isinstance(r.error, SessionFailed) and s.state is SessionState.FAILED
    assert s.counters.get("recovery", "failed") == 1
    after = read(h, 0, 1)
    assert after.done and isinstance(after.error, SessionFailed)


def _register_identity(h: Harness) -> None:
    b80, b83 = bytearray(255), bytearray(255)
    t1 = h.session.submit(ScsiRequest(cdb.inquiry(0x80, 255), read_into=b80), now=h.now)
    t2 = h.session.submit(ScsiRequest(cdb.inquiry(0x83, 255), read_into=b83), now=h.now)
    h.run_until(lambda: done(t1, t2))
    ident = identity_from_vpd(bytes(b80[:t1.check().transferred]),
                              bytes(b83[:t2.check().transferred]))
    assert ident.serial == "FAKE0001" and ident.designator is not None
    h.session.register_lun_identity(0, ident)


def test_same_lun_after_recovery_is_accepted() -> None:
    t = FakeTarget()
    h = Harness(t)
    s = h.login()
    _register_identity(h)
    t.restart()
    h.run_until(lambda: s.ready and t.connections == 2, 60)
    w = write(h, 0, pattern(BS))
    h.run_until(lambda: w.done)
    assert w.error is None


def test_different_lun_after_recovery_is_refused() -> None:
    t = FakeTarget()
    h = Harness(t)
    s = h.login()
    _register_identity(h)
    t.hold = True
    w = write(h, 0, pattern(4 * BS))
    h.settle()
    t.restart()
    t.luns[0] = FakeLun(serial="OTHER", naa=bytes.fromhex("6001405fffffffff"))
    t.hold = False
    h.run_until(lambda: w.done, 60)
    assert isinstance(w.error, LunChangedError)
    assert t.luns[0].read(0, 4) == bytes(4 * BS)  # nothing written
    assert len([c for c in t.commands if c.write]) == 1  # only the one before the restart
    later = write(h, 0, pattern(BS))
    assert later.done and isinstance(later.error, LunChangedError)
    assert s.counters.get("recovery", "lun_changed") == 1


def test_lun_identity_mismatch_text() -> None:
    a = LunIdentity("S1", (3, b"\x01"))
    assert a.mismatch(LunIdentity("S1", (3, b"\x01"))) is None
    why = a.mismatch(LunIdentity("S2", (3, b"\x02")))
    assert why is not None and "S2" in why


def test_login_redirect_followed() -> None:
    t = FakeTarget()
    h = Harness(t)
    first = [True]
    orig = t._login

    def login(req):  # type: ignore[no-untyped-def]
        if first[0]:
            first[0] = False
            from bootinit.iscsi.keys import encode_text
            from bootinit.iscsi.pdu import LoginResponse
            t._send(LoginResponse(itt=req.itt, isid=req.isid, status_class=1, status_detail=2,
                                  data=encode_text([("TargetAddress", "10.0.0.9:3261,1")])))
            return
        orig(req)

    t._login = login  # type: ignore[method-assign]
    s = h.login()
    assert h.connects[-1] == Portal("10.0.0.9", 3261, 1) and s.portal.port == 3261


def test_login_failure_is_clear_and_final() -> None:
    t = FakeTarget()
    h = Harness(t)
    orig = t._login

    def login(req):  # type: ignore[no-untyped-def]
        from bootinit.iscsi.pdu import LoginResponse
        t._send(LoginResponse(itt=req.itt, isid=req.isid, status_class=2, status_detail=1))

    t._login = login  # type: ignore[method-assign]
    h.run_until(lambda: h.session.finished)
    assert h.session.state is SessionState.FAILED
    assert "authentication failure" in str(h.session.error)
    assert orig is not None


def test_target_busy_at_login_is_retried() -> None:
    t = FakeTarget()
    t.accepting = False
    h = Harness(t)
    h.advance(3.0)
    assert not h.session.ready and t.connections >= 2
    t.accepting = True
    h.login()
    assert h.session.counters.get("login", "failures_status_0301") >= 2


def test_header_digest_error_drops_connection_and_recovers() -> None:
    t = FakeTarget(settings=TargetSettings(header_digest=True))
    h = Harness(t, operational=OperationalConfig(header_digest=("CRC32C",)))
    s = h.login()
    t.hold = True
    r = read(h, 0, 1)
    h.settle()
    t.out += b"\x20" + bytes(47) + b"\x00\x00\x00\x00"  # NOP-In with a bad digest
    t.hold = False
    h.run_until(lambda: r.done, 60)
    assert r.error is None
    assert s.counters.get("errors", "header_digest") == 1
    assert s.counters.get("recovery", "succeeded") == 1


def test_send_targets_in_a_discovery_session() -> None:
    t = FakeTarget()
    h = Harness(t, discovery=True, target_name=None)
    s = h.login()
    op = s.send_targets(now=h.now)
    h.run_until(lambda: op.done)
    targets = op.check()
    assert targets[0].name.endswith(":fake") and targets[0].portals[0].port == 3260


def test_unanswered_identity_check_retries_instead_of_refusing_the_lun() -> None:
    t = FakeTarget()
    h = Harness(t, command_timeout=5.0)
    s = h.login()
    _register_identity(h)
    w = write(h, 0, pattern(BS))
    h.run_until(lambda: w.done)
    t.restart()
    swallowed: list[ScsiCommand] = []

    def swallow_first_inquiry(cmd: ScsiCommand) -> bool:
        if cmd.cdb[0] == 0x12 and not swallowed:
            swallowed.append(cmd)
            return True
        return False

    t.command_hook = swallow_first_inquiry
    h.run_until(lambda: s.ready and t.connections == 3, 120)
    w2 = write(h, 0, pattern(BS, 1))
    h.run_until(lambda: w2.done)
    assert w2.error is None and swallowed
    assert s.counters.get("recovery", "lun_changed") == 0


def test_temporary_redirect_is_used_once() -> None:
    t = FakeTarget()
    h = Harness(t)
    orig = t._login
    redirects = [0]

    def login(req):  # type: ignore[no-untyped-def]
        if redirects[0] == 0 and h.connects[-1].port == 3260:
            redirects[0] += 1
            from bootinit.iscsi.keys import encode_text
            from bootinit.iscsi.pdu import LoginResponse
            t._send(LoginResponse(itt=req.itt, isid=req.isid, status_class=1, status_detail=1,
                                  data=encode_text([("TargetAddress", "10.0.0.7:3262")])))
            return
        orig(req)

    t._login = login  # type: ignore[method-assign]
    s = h.login()
    assert h.connects[-1] == Portal("10.0.0.7", 3262) and s.portal == Portal("10.0.0.1", 3260)
    t.restart()
    h.run_until(lambda: s.ready and t.connections == 3, 60)
    assert h.connects[-1] == Portal("10.0.0.1", 3260)  # back to the original portal


def test_data_digest_error_on_data_in_retries_the_read() -> None:
    t = FakeTarget(settings=TargetSettings(data_digest=True))
    h = Harness(t, operational=OperationalConfig(data_digest=("CRC32C",)))
    s = h.login()
    t.luns[0].write(0, pattern(16 * BS, 4))
    t.corrupt_data_digest = 1
    r = read(h, 0, 16)
    h.run_until(lambda: r.done)
    assert r.error is None and buf_of(r) == pattern(16 * BS, 4)
    assert s.counters.get("errors", "data_digest") == 1
    assert s.counters.get("commands", "retried_digest") == 1 and s.ready


def test_busy_window_under_long_load_is_not_a_stall() -> None:
    t = FakeTarget(window=4)
    h = Harness(t, queue_depth=16, command_timeout=10.0, nop_timeout=5.0)
    s = h.login()
    # 200 commands, each held for 1 s by the target: the window is full most of the time
    tasks: list[Task] = [read(h, i % 64, 1) for i in range(200)]
    t.hold = True
    for _ in range(60):
        h.advance(1.0)
        t.release()
        t.hold = True
    t.hold = False
    t.release()
    h.run_until(lambda: done(*tasks), 60)
    assert all(x.error is None for x in tasks)
    assert s.counters.get("recovery", "started") == 0
