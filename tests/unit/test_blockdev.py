"""BlockDevice and the IscsiSession helpers over the pure session and the fake target."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest

from bootinit.blockdev import DEFAULT_MAX_TRANSFER, BlockDevice, IoRequest
from bootinit.initiator import IscsiSession, default_initiator_name
from bootinit.iscsi.pdu import ScsiCommand
from bootinit.iscsi.task import ScsiRequest, Task, TaskCallback
from bootinit.scsi.inquiry import BlockLimits
from bootinit.scsi.sense import ScsiError
from tests.unit.fake_target import FakeLun, FakeTarget, Harness, TargetSettings


class HarnessSession(IscsiSession):
    """IscsiSession whose loop is the fake-clock harness."""

    def __init__(self, h: Harness, lun: int = 0) -> None:
        self.h = h
        self.session = h.session
        self.lun = lun
        self._wait_slack = 30.0

    def submit(self, request: ScsiRequest, callback: TaskCallback | None = None) -> Task:
        return self.session.submit(request, callback, now=self.h.now)

    def wait(self, pred: Callable[[], bool], what: str, timeout: float | None = None) -> None:
        self.h.run_until(pred, 600.0)


def open_dev(t: FakeTarget, lun: int = 0, **kw: Any) -> tuple[Harness, BlockDevice]:
    h = Harness(t, **kw)
    h.login()
    return h, BlockDevice(HarnessSession(h, lun), lun)


def test_open_reads_geometry_and_identity_and_retries_unit_attention() -> None:
    t = FakeTarget()
    t.ua = {0}
    _h, dev = open_dev(t)
    assert dev.block_size == 512 and dev.num_blocks == 2048 and dev.capacity == 2048 * 512
    assert dev.identity.serial == "FAKE0001" and dev.identity.designator is not None
    assert dev.inquiry.vendor == "BOOTINIT"
    assert dev.session.session.lun_identity(0) == dev.identity


def test_sync_read_write_flush() -> None:
    t = FakeTarget()
    _h, dev = open_dev(t)
    data = os.urandom(100 * 512)
    dev.write(7, data)
    assert dev.read(7, 100) == data
    buf = bytearray(10 * 512)
    assert dev.readinto(7, buf) == len(buf) and bytes(buf) == data[:len(buf)]
    dev.flush()


def test_commands_are_not_split_at_max_burst() -> None:
    """MaxBurstLength bounds a sequence, not a command (RFC 7143 §13.13): a 1000-block
    write is one command, its data solicited by several R2Ts of at most 64 KiB."""
    t = FakeTarget(settings=TargetSettings(max_burst=65536, first_burst=65536))
    _h, dev = open_dev(t)
    assert dev.block_limits is None  # VPD 0xB0 not listed: the 2 MiB default
    assert dev.max_transfer_blocks == DEFAULT_MAX_TRANSFER // 512
    before = len(t.commands)
    data = os.urandom(1000 * 512)
    dev.write(0, data)
    writes = [c for c in t.commands[before:] if c.write]
    assert [c.expected_length for c in writes] == [1000 * 512]
    assert dev.read(0, 1000) == data
    reads = [c for c in t.commands[before:] if c.read]
    assert [c.expected_length for c in reads] == [1000 * 512]


def test_large_requests_are_split_at_the_block_limits_maximum() -> None:
    """A LUN whose Block Limits page (VPD 0xB0) says MAXIMUM TRANSFER LENGTH 128 gets
    commands of at most 128 blocks, also when the caller asks for more."""
    t = FakeTarget(luns={0: FakeLun(max_transfer_blocks=128)})
    h, dev = open_dev(t)
    assert dev.block_limits == BlockLimits(128, None)
    assert dev.max_transfer_blocks == 128
    assert BlockDevice(HarnessSession(h, 0), 0, max_transfer=1 << 30).max_transfer_blocks \
        == 128
    before = len(t.commands)
    data = os.urandom(1000 * 512)
    dev.write(0, data)
    writes = [c for c in t.commands[before:] if c.write]
    assert len(writes) == 8 and all(c.expected_length <= 128 * 512 for c in writes)
    assert dev.read(0, 1000) == data


def test_queue_depth_32_in_flight() -> None:
    t = FakeTarget(window=64)
    h, dev = open_dev(t, queue_depth=32)
    t.hold = True
    reqs: list[IoRequest] = []
    for i in range(40):
        reqs.append(dev.submit_read(i * 8, 8))
    h.settle()
    assert len(t.held) == 32
    t.release()
    done: list[IoRequest] = []
    more = dev.submit_write(0, bytes(512), callback=done.append)
    dev.wait(*reqs, more)
    assert done == [more] and all(r.error is None for r in reqs)


def test_beyond_2tib_uses_16_byte_cdbs() -> None:
    big = FakeLun(blocks=(5 << 40) // 512, sparse={})
    t = FakeTarget(luns={0: big})
    _h, dev = open_dev(t)
    assert dev.capacity == 5 << 40
    lba = (3 << 40) // 512 + 5
    data = os.urandom(4 * 512)
    dev.write(lba, data)
    assert dev.read(lba, 4) == data
    ops = {c.cdb[0] for c in t.commands if c.cdb[0] in (0x28, 0x2A, 0x88, 0x8A)}
    assert ops == {0x88, 0x8A}
    assert any(c.cdb[0] == 0x9E for c in t.commands)  # READ CAPACITY(16) fallback


def test_out_of_range_and_misaligned_requests_are_refused() -> None:
    _h, dev = open_dev(FakeTarget())
    with pytest.raises(ValueError):
        dev.read(2047, 2)
    with pytest.raises(ValueError):
        dev.write(0, b"x" * 100)


def test_scsi_error_raised_with_sense() -> None:
    t = FakeTarget()
    _h, dev = open_dev(t)
    t.sense_hook = lambda cmd: bytes.fromhex("700003000000000a00000000110000000000")
    with pytest.raises(ScsiError, match="unrecovered read error"):
        dev.read(0, 1)


def test_helpers_report_luns_tur_request_sense() -> None:
    t = FakeTarget(luns={0: FakeLun(), 1: FakeLun(serial="B"), 300: FakeLun(serial="C")})
    h = Harness(t)
    h.login()
    s = HarnessSession(h)
    assert s.report_luns() == [0, 1, 300]
    assert s.test_unit_ready(1).good
    sense = s.request_sense(1)
    assert sense is not None and sense.key == 0
    assert s.lun_identity(300).serial == "C"
    assert s.supported_vpd_pages() == [0x00, 0x80, 0x83]


def test_short_read_is_an_error() -> None:
    t = FakeTarget()
    _h, dev = open_dev(t)

    def short(cmd: ScsiCommand, pdus: list) -> list:  # type: ignore[type-arg]
        from bootinit.iscsi.pdu import DataIn
        return [DataIn(itt=cmd.itt, datasn=0, buffer_offset=0, data=b"\0" * 512, final=True,
                       status_present=True, underflow=True, residual=512)]

    t.datain_hook = short
    with pytest.raises(Exception, match="512 of 1024"):
        dev.read(0, 2)


def test_default_initiator_name() -> None:
    assert default_initiator_name("My_Host.example") == "iqn.2026-11.org.bootinit:my-host.example"
