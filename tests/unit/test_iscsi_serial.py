"""RFC 1982 serial arithmetic across the 2**32 wrap."""

from __future__ import annotations

import pytest

from bootinit.iscsi import serial as S


def test_lt_gt_simple_and_across_wrap() -> None:
    assert S.sn_lt(1, 2) and S.sn_gt(2, 1)
    assert S.sn_lt(0xFFFFFFFF, 0) and S.sn_gt(0, 0xFFFFFFFF)
    assert S.sn_lt(0xFFFFFFF0, 0x10)
    assert not S.sn_lt(5, 5) and not S.sn_gt(5, 5)
    assert S.sn_le(5, 5) and S.sn_ge(5, 5)


def test_half_distance_is_incomparable() -> None:
    assert not S.sn_lt(0, 0x80000000) and not S.sn_gt(0, 0x80000000)
    assert S.sn_lt(0, 0x7FFFFFFF)
    assert S.sn_gt(0, 0x80000001)


def test_add_and_diff() -> None:
    assert S.sn_add(0xFFFFFFFF, 2) == 1
    assert S.sn_inc(0xFFFFFFFF) == 0
    assert S.sn_diff(1, 0xFFFFFFFF) == 2
    assert S.sn_diff(0xFFFFFFFF, 1) == -2
    with pytest.raises(ValueError):
        S.sn_add(0, 0x80000000)


def test_window_across_wrap() -> None:
    assert S.in_window(0, 0xFFFFFFFE, 2)
    assert S.in_window(0xFFFFFFFE, 0xFFFFFFFE, 2)
    assert not S.in_window(3, 0xFFFFFFFE, 2)
    assert not S.in_window(0xFFFFFFFD, 0xFFFFFFFE, 2)


def test_cmd_window() -> None:
    assert S.cmd_window_size(10, 19) == 10
    assert S.cmd_window_size(10, 9) == 0  # MaxCmdSN = ExpCmdSN - 1: closed
    assert S.cmd_window_size(0, 0xFFFFFFFF) == 0
    assert S.cmd_window_size(0xFFFFFFFF, 3) == 5
    assert S.cmd_window_size(10, 5) == 0  # invalid
    assert S.cmdsn_allowed(0, 0xFFFFFFFF, 3)
    assert not S.cmdsn_allowed(4, 0xFFFFFFFF, 3)


def test_update_cmd_window() -> None:
    # moves forward across the wrap
    assert S.update_cmd_window(0xFFFFFFF0, 0xFFFFFFFF, 2, 20) == (2, 20)
    # stale values ignored
    assert S.update_cmd_window(10, 20, 9, 19) == (10, 20)
    # invalid pair (MaxCmdSN < ExpCmdSN - 1) ignored entirely
    assert S.update_cmd_window(10, 20, 30, 5) == (10, 20)
    # window closing is valid
    assert S.update_cmd_window(10, 20, 21, 20) == (21, 20)
