"""bench/iscsi_io.py's ``--pin``: how the CPUs are split and how the split is shown.

Pure functions; nothing is pinned here (tests/integration/test_bench_smoke.py pins a
real tgtd and checks /proc).
"""

from __future__ import annotations

import pytest

from bench.iscsi_io import BenchError, CpuSplit, cpu_split, pin_json, pin_text


def test_two_cpus_one_each() -> None:
    split = cpu_split([1, 0])
    assert split == CpuSplit(frozenset({0}), frozenset({1}))
    assert split.text() == "initiator on CPU 0, tgtd on CPU 1"


def test_halves_lower_for_the_initiator() -> None:
    assert cpu_split(range(4)) == CpuSplit(frozenset({0, 1}), frozenset({2, 3}))
    # an odd count: the target (tgtd's main thread and its I/O threads) gets the extra
    odd = cpu_split([2, 5, 7])
    assert odd == CpuSplit(frozenset({2}), frozenset({5, 7}))
    assert odd.text() == "initiator on CPU 2, tgtd on CPUs 5,7"


def test_sets_are_disjoint_and_cover_all() -> None:
    for n in range(2, 9):
        s = cpu_split(range(10, 10 + n))
        assert s.initiator and s.target and not s.initiator & s.target
        assert s.initiator | s.target == set(range(10, 10 + n))
        assert max(s.initiator) < min(s.target)


@pytest.mark.parametrize("cpus", [[], [3]])
def test_fewer_than_two_cpus_is_a_named_error(cpus: list[int]) -> None:
    with pytest.raises(BenchError, match=rf"--pin needs two CPUs, this process may use "
                                         rf"{len(cpus)} \({'3' if cpus else 'none'}\)"):
        cpu_split(cpus)


def test_default_is_this_process_affinity() -> None:
    import os
    avail = os.sched_getaffinity(0)
    if len(avail) < 2:
        with pytest.raises(BenchError):
            cpu_split()
        return
    s = cpu_split()
    assert s.initiator | s.target == avail


def test_json_and_header_round_trip() -> None:
    split = cpu_split([0, 1, 2, 3])
    doc = pin_json(split)
    assert doc == {"initiator": [0, 1], "target": [2, 3]}
    assert pin_text(doc) == "initiator on CPUs 0,1, tgtd on CPUs 2,3"
    assert pin_json(None) is None
    assert pin_text(None) == "CPUs not pinned (the scheduler shares them all)"
