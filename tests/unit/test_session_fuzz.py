"""Hostile target input: the session never raises out of ``receive``, never hangs,
and every task ends with a result or a typed error (hypothesis)."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bootinit.iscsi.errors import IscsiError
from bootinit.iscsi.pdu import (
    R2T,
    AsyncMessage,
    DataIn,
    NopIn,
    Pdu,
    Reject,
    ScsiResponse,
    TaskMgmtResponse,
    TextResponse,
    encode_bytes,
)
from bootinit.iscsi.task import ScsiRequest, Task
from bootinit.scsi import cdb
from bootinit.scsi.sense import ScsiError
from tests.unit.fake_target import FakeTarget, Harness

u32 = st.integers(0, 0xFFFFFFFF)
small = st.integers(0, 3)  # ITTs near the ones in use


def _pdus() -> st.SearchStrategy[Pdu]:
    itt = st.one_of(small, u32)
    data = st.binary(max_size=64)
    return st.one_of(
        st.builds(DataIn, itt=itt, datasn=st.integers(0, 4), buffer_offset=st.integers(0, 2048),
                  data=data, final=st.booleans(), status_present=st.just(False),
                  exp_cmdsn=u32, max_cmdsn=u32),
        st.builds(DataIn, itt=itt, datasn=st.integers(0, 4), buffer_offset=st.integers(0, 600),
                  data=data, final=st.just(True), status_present=st.just(True),
                  status=st.sampled_from([0, 2, 8, 0x28]), underflow=st.booleans(),
                  residual=u32),
        st.builds(ScsiResponse, itt=itt, status=st.sampled_from([0, 2, 8]), response=small,
                  data=data, residual=u32, statsn=u32, exp_cmdsn=u32, max_cmdsn=u32),
        st.builds(R2T, itt=itt, ttt=st.integers(0, 100), r2tsn=st.integers(0, 3),
                  buffer_offset=st.integers(0, 4096), desired_length=st.integers(0, 1 << 20)),
        st.builds(NopIn, itt=itt, ttt=st.one_of(st.just(0xFFFFFFFF), u32), data=data),
        st.builds(TaskMgmtResponse, itt=itt, response=st.integers(0, 255)),
        st.builds(TextResponse, itt=itt, data=data),
        st.builds(AsyncMessage, event=st.integers(0, 255), parameter2=st.integers(0, 5),
                  parameter3=st.integers(0, 5)),
        st.builds(Reject, reason=st.integers(0, 15), data=st.binary(min_size=48, max_size=48)),
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_pdus(), max_size=8), st.binary(max_size=200), st.integers(1, 64))
def test_hostile_pdus_end_in_results_or_typed_errors(pdus: list[Pdu], junk: bytes,
                                                      chunk: int) -> None:
    t = FakeTarget()
    h = Harness(t, command_timeout=5.0, nop_interval=None)
    s = h.login()
    t.hold = True
    tasks: list[Task] = [
        s.submit(ScsiRequest(cdb.read_cdb(0, 1), read_into=bytearray(512)), now=h.now),
        s.submit(ScsiRequest(cdb.write_cdb(0, 8), write_data=bytes(4096)), now=h.now),
        s.submit(ScsiRequest(cdb.test_unit_ready()), now=h.now),
    ]
    h.settle()
    stream = b"".join(encode_bytes(p) for p in pdus) + junk
    for i in range(0, len(stream), chunk):
        s.receive(stream[i:i + chunk], h.now)  # must never raise
    t.hold = False
    t.release()
    h.run_until(lambda: all(x.done for x in tasks) or s.finished, 600)
    for x in tasks:
        if x.done and x.error is not None:
            assert isinstance(x.error, IscsiError | ScsiError), repr(x.error)
