"""bench/run_all.py's rounds: medians, ranges, per-round ratios and goal verdicts.

Pure functions over hand-made rows; nothing is measured, no root needed.
"""

from __future__ import annotations

import dataclasses
import json

import pytest

from bench import run_all
from bench.run_all import Row, Settings, add_ratios, aggregate, goal_summary, median

SETTINGS = Settings()


def mb(part: str, test: str, who: str, mtu: int | None, offload: str, value: float,
       iops: float | None = None, check: str = "ok", note: str = "") -> Row:
    """One round's measured row."""
    return Row(part, test, who, mtu, offload, value, iops, check, note)


def seq_read_rounds(ours: list[float], perf: list[float], qemu: list[float]) -> list[list[Row]]:
    """Per round: bootinit, iscsi-perf and qemu-img seq-read rows."""
    return [[mb("iscsi", "seq-read", "bootinit", 1500, "on", o),
             mb("iscsi", "seq-read", "iscsi-perf", None, "-", p, check="-"),
             mb("iscsi", "seq-read", "qemu-img", None, "-", q, check="-")]
            for o, p, q in zip(ours, perf, qemu, strict=True)]


def by_who(rows: list[Row]) -> dict[str, Row]:
    return {r.who: r for r in rows}


# --------------------------------------------------------------------------- median


def test_median_odd_even_and_empty() -> None:
    assert median([3.0, 1.0, 2.0]) == 2.0
    assert median([4.0, 1.0]) == 2.5
    assert median([7.0]) == 7.0
    with pytest.raises(ValueError):
        median([])


# --------------------------------------------------------------------------- aggregate


def test_aggregate_medians_samples_and_order() -> None:
    rounds = [[mb("iscsi", "rand-read-qd1", "bootinit", 1500, "on", v, v * 1e6 / 4096),
               mb("iscsi", "seq-read", "bootinit", 1500, "on", 10 * v)]
              for v in (3.0, 1.0, 2.0)]
    out = aggregate(rounds)
    assert [r.test for r in out] == ["rand-read-qd1", "seq-read"]  # first appearance
    rand, seq = out
    assert rand.samples == [3.0, 1.0, 2.0] and rand.mb_per_s == 2.0
    assert rand.iops == pytest.approx(2e6 / 4096)
    assert rand.iops_samples == pytest.approx([v * 1e6 / 4096 for v in (3.0, 1.0, 2.0)])
    assert seq.samples == [30.0, 10.0, 20.0] and seq.mb_per_s == 20.0 and seq.iops is None
    assert seq.check == "ok" and run_all.spread(seq) == "10.0-30.0"
    # the inputs are left as they were
    assert rounds[0][0].samples == [] and rounds[0][0].mb_per_s == 3.0


def test_aggregate_even_rounds_median_within_samples() -> None:
    out = aggregate([[mb("tcp", "tcp-recv", "bootinit", 1500, "off", v)] for v in (100, 300)])
    assert out[0].mb_per_s == 200 and min(out[0].samples) <= 200 <= max(out[0].samples)
    assert run_all.spread(out[0]) == "100-300"


def test_aggregate_one_round_is_the_measurement() -> None:
    row = mb("iscsi", "seq-write", "qemu-img", None, "-", 123.0, note="convert")
    (out,) = aggregate([[row]])
    assert (out.mb_per_s, out.samples, out.check, out.note) == (123.0, [123.0], "ok",
                                                                "convert")
    assert run_all.spread(out) == "once"


def test_aggregate_a_failed_check_in_any_round_fails_the_row() -> None:
    key = ("iscsi", "seq-read", "bootinit", 1500, "on")
    rounds = [[mb(*key, 100.0)],
              [run_all.missing(*key, "FAIL", "BenchError: data read differs")],
              [mb(*key, 120.0)],
              [run_all.missing(*key, "FAIL", "BenchError: later")]]
    (out,) = aggregate(rounds)
    assert out.check == "FAIL" and out.mb_per_s is None and out.iops is None
    assert out.note == "round 2 (and 1 more): BenchError: data read differs"
    assert out.samples == [100.0, 120.0]  # the good rounds, for the JSON
    assert run_all.spread(out) == "-"
    # one round: the note is the failure itself, as before --rounds
    (one,) = aggregate([[run_all.missing(*key, "FAIL", "why")]])
    assert (one.check, one.note) == ("FAIL", "why")


def test_aggregate_not_measured_rows_stay_na() -> None:
    key = ("iscsi", "seq-read", "qemu-img", None, "-")
    rounds = [[run_all.missing(*key, "n/a", "qemu-img not found")] for _ in range(3)]
    (out,) = aggregate(rounds)
    assert (out.check, out.note, out.mb_per_s, out.samples) == (
        "n/a", "qemu-img not found", None, [])


def test_aggregate_row_measured_once_among_rounds() -> None:
    py = mb("tcp", "tcp-recv", "pytcp", 1500, "off", 2.0, note="pmd-pytcp")
    ours = [mb("tcp", "tcp-recv", "bootinit", 1500, "off", v) for v in (50.0, 70.0, 60.0)]
    out = by_who(aggregate([[py, ours[0]], [ours[1]], [ours[2]]]))
    assert out["pytcp"].samples == [2.0] and out["pytcp"].mb_per_s == 2.0
    assert out["bootinit"].samples == [50.0, 70.0, 60.0] and out["bootinit"].mb_per_s == 60.0


# --------------------------------------------------------------------------- ratios


def test_goal_uses_median_of_per_round_ratios() -> None:
    # Round by round ours keeps pace with iscsi-perf (load moved both), but the ratio
    # of the medians (200/250 = 0.8) differs from the median per-round ratio (1.0).
    rows = aggregate(seq_read_rounds([100, 200, 300], [100, 300, 250], [50, 50, 50]))
    add_ratios(rows, SETTINGS)
    ours = by_who(rows)["bootinit"]
    assert ours.ratios["iscsi-perf"] == pytest.approx(200 / 250)
    assert ours.ratios["qemu-img"] == pytest.approx(4.0)
    assert ours.round_ratios["iscsi-perf"] == pytest.approx([1.0, 200 / 300, 300 / 250])
    assert ours.round_ratios["qemu-img"] == pytest.approx([2.0, 4.0, 6.0])
    # the goal's reference is the faster libiscsi row of each round
    assert ours.goal_round_ratios["seq-read"] == pytest.approx([1.0, 200 / 300, 1.2])
    assert ours.goal_ratios["seq-read"] == pytest.approx(1.0)
    assert ours.goals["seq-read"] is True
    (g,) = [g for g in goal_summary(rows) if g["goal"] == "seq-read"]
    assert g["all_met"] and g["best_ratio"] == pytest.approx(1.0)


def test_first_pass_row_is_compared_with_the_tools_seq_read_without_a_goal() -> None:
    """Our first read pass after the write (``seq-read-1st``) has ratios against the
    tools' ``seq-read`` rows (they read only so) but no goal verdict: the goal is the
    like-for-like ``seq-read`` row's."""
    rounds = seq_read_rounds([200, 200, 200], [250, 250, 250], [100, 100, 100])
    for k, rnd in enumerate(rounds):
        rnd.append(mb("iscsi", "seq-read-1st", "bootinit", 1500, "on", 100.0 + k))
    rows = aggregate(rounds)
    add_ratios(rows, SETTINGS)
    (first,) = [r for r in rows if r.test == "seq-read-1st"]
    assert first.ratios["iscsi-perf"] == pytest.approx(101 / 250)
    assert first.ratios["qemu-img"] == pytest.approx(101 / 100)
    assert first.goals == {}
    (g,) = [g for g in goal_summary(rows) if g["goal"] == "seq-read"]
    assert g["best_ratio"] == pytest.approx(200 / 250)


def test_goal_not_met_when_per_round_median_is_below() -> None:
    rows = aggregate(seq_read_rounds([70, 90, 78], [100, 100, 100], [10, 10, 10]))
    add_ratios(rows, SETTINGS)
    ours = by_who(rows)["bootinit"]
    assert ours.goal_ratios["seq-read"] == pytest.approx(0.78)
    assert ours.goals["seq-read"] is False


def test_one_round_ratios_equal_the_goal_ratio() -> None:
    rows = aggregate(seq_read_rounds([90], [100], [120]))
    add_ratios(rows, SETTINGS)
    ours = by_who(rows)["bootinit"]
    assert ours.ratios == pytest.approx({"iscsi-perf": 0.9, "qemu-img": 0.75})
    assert ours.goal_ratios["seq-read"] == pytest.approx(0.75)
    assert ours.goal_round_ratios["seq-read"] == pytest.approx([0.75])
    assert ours.goals["seq-read"] is False


def test_missing_reference_cannot_be_judged() -> None:
    rows = aggregate([[mb("iscsi", "seq-write", "bootinit", 1500, "on", v),
                       run_all.missing("iscsi", "seq-write", "qemu-img", None, "-", "n/a",
                                       "qemu-img not found")] for v in (1.0, 2.0)])
    add_ratios(rows, SETTINGS)
    ours = by_who(rows)["bootinit"]
    assert ours.goals == {"seq-write": None} and ours.goal_ratios == {}
    (g,) = [g for g in goal_summary(rows) if g["goal"] == "seq-write"]
    assert g["judged"] == 0 and g["best_ratio"] is None


def test_tcp_pytcp_once_kernel_and_tap_per_round() -> None:
    def tcp(who: str, off: str, v: float, mtu: int = 65520) -> Row:
        return mb("tcp", "tcp-recv", who, mtu, off, v, check="-" if who == "tap-raw" else "ok")

    rounds = [[tcp("pytcp", "off", 5.0)], [], []]
    for k, (ours_mb, tap, kern) in enumerate([(100, 400, 300), (120, 300, 500), (80, 200, 250)]):
        rounds[k] += [tcp("bootinit", "on", ours_mb), tcp("tap-raw", "off", tap),
                      mb("kernel", "tcp-recv", "kernel", 65520, "on", kern)]
    rows = aggregate(rounds)
    add_ratios(rows, SETTINGS)
    ours = by_who(rows)["bootinit"]
    assert ours.samples == [100, 120, 80] and ours.mb_per_s == 100
    assert ours.ratios == pytest.approx({"tap": 100 / 300, "pytcp": 20.0, "kernel": 100 / 300})
    assert ours.round_ratios["pytcp"] == pytest.approx([20.0, 24.0, 16.0])
    assert ours.round_ratios["tap"] == pytest.approx([0.25, 0.4, 0.4])
    assert ours.goal_ratios["pytcp"] == pytest.approx(20.0) and ours.goals["pytcp"] is True
    assert ours.goal_round_ratios["kernel"] == pytest.approx([1 / 3, 0.24, 0.32])
    assert ours.goal_ratios["kernel"] == pytest.approx(0.32) and ours.goals["kernel"] is True
    py = by_who(rows)["pytcp"]
    assert py.ratios == pytest.approx({"tap": 5.0 / 300})
    assert py.round_ratios["tap"] == pytest.approx([5 / 400, 5 / 300, 5 / 200])
    assert py.goals == {}


# --------------------------------------------------------------------------- output


def _info(rounds: int) -> dict[str, object]:
    s = dataclasses.replace(Settings(parts=["iscsi"]), rounds=rounds)
    return {"settings": dataclasses.asdict(s), "date": "now", "cpus": 2,
            "load_start": 0.0, "python": "3", "kernel": "6"}


def test_table_range_column_only_with_rounds() -> None:
    rows = aggregate(seq_read_rounds([100, 200, 300], [100, 300, 250], [50, 50, 50]))
    add_ratios(rows, SETTINGS)
    goals = goal_summary(rows)
    many = run_all.table(rows, goals, _info(3))
    assert "3 rounds" in many and "  range" in many
    line = next(x for x in many.splitlines() if x.startswith("iscsi  seq-read") and
                "bootinit" in x)
    assert "100-300" in line and ">=0.8x libiscsi: met (1.00; per round 0.67-1.20)" in line
    one_rows = aggregate(seq_read_rounds([90], [100], [120]))
    add_ratios(one_rows, SETTINGS)
    one = run_all.table(one_rows, goal_summary(one_rows), _info(1))
    assert "range" not in one and "rounds" not in one and "per round" not in one
    line = next(x for x in one.splitlines() if x.startswith("iscsi") and "bootinit" in x)
    assert line.split()[5:8] == ["90.0", "-", "ok"], line


def test_json_carries_samples_and_round_ratios() -> None:
    rows = aggregate(seq_read_rounds([100, 200, 300], [100, 300, 250], [50, 50, 50]))
    add_ratios(rows, SETTINGS)
    d = json.loads(json.dumps(by_who(rows)["bootinit"].as_dict()))
    assert d["samples"] == [100, 200, 300] and d["mb_per_s"] == 200
    assert d["mb_per_s_range"] == [100, 300]
    assert d["round_ratios"]["iscsi-perf"] == [1.0, 0.6667, 1.2]
    assert d["goal_ratios"] == {"seq-read": 1.0}
    assert d["goal_round_ratios"]["seq-read"] == [1.0, 0.6667, 1.2]


def test_cpu_columns_are_medians_of_the_rounds_and_shown() -> None:
    rounds = seq_read_rounds([100, 200, 300], [100, 300, 250], [50, 50, 50])
    for k, rows in enumerate(rounds):
        ours, perf, _qemu = rows
        ours.cpu_samples, ours.target_cpu_samples = [0.5 + k / 10], [0.9 - k / 10]
        perf.cpu_samples, perf.target_cpu_samples = [0.2], [0.7 + k]
    rows = aggregate(rounds)
    add_ratios(rows, SETTINGS)
    who = by_who(rows)
    assert who["bootinit"].cpu_samples == [0.5, 0.6, 0.7]
    assert who["bootinit"].cpu == pytest.approx(0.6)
    assert who["bootinit"].target_cpu == pytest.approx(0.8)
    assert who["iscsi-perf"].target_cpu == pytest.approx(1.7)
    assert who["qemu-img"].cpu is None
    text = run_all.table(rows, goal_summary(rows), _info(3))
    assert "cpu, tgtd: CPU ms per MiB" in text and "which share the 2 CPUs" in text
    assert "CPUs not pinned (the scheduler shares them all)" in text
    pinned = {**_info(3), "iscsi": {"pin": {"initiator": [0], "target": [1]},
                                    "target_cc": "bbr"}}
    ptext = run_all.table(rows, goal_summary(rows), pinned)
    assert "tgtd meanwhile, each on its own CPUs (--pin)" in ptext
    assert "which share the" not in ptext
    assert "(TCP congestion control bbr; initiator on CPU 0, tgtd on CPU 1)" in ptext
    line = next(x for x in text.splitlines() if x.startswith("iscsi") and "bootinit" in x)
    assert "  0.60  0.80  ok" in line, line
    line = next(x for x in text.splitlines()
                if x.startswith("iscsi") and x.split()[2] == "qemu-img")
    assert "     -     -  -" in line, line
    d = json.loads(json.dumps(who["iscsi-perf"].as_dict()))
    assert d["cpu"] == 0.2 and d["target_cpu_samples"] == [0.7, 1.7, 2.7]
    # No CPU numbers at all (TCP-only runs, old JSON): no columns.
    plain = aggregate(seq_read_rounds([100], [100], [100]))
    assert "cpu, tgtd" not in run_all.table(plain, goal_summary(plain), _info(1))


def test_cpu_span_measures_this_process_and_a_child(tmp_path: object) -> None:
    """CpuSpan: our own CPU while we burn some, a reaped child's, tgtd's by /proc."""
    import os
    import subprocess
    import sys
    import time

    from bench import iscsi_io

    class FakeTgtd:
        popen = subprocess.Popen([sys.executable, "-c",
                                  "import time\nt=time.process_time()\n"
                                  "while time.process_time()-t<0.3: pass\ntime.sleep(5)"])

    class FakeTarget:
        tgtd = FakeTgtd()

    try:
        span = iscsi_io.CpuSpan(FakeTarget()).start()  # type: ignore[arg-type]
        t = time.process_time()
        while time.process_time() - t < 0.2:
            pass
        subprocess.run([sys.executable, "-c", "import time\nt=time.process_time()\n"
                        "while time.process_time()-t<0.2: pass"], check=True)
        time.sleep(0.5)  # the fake tgtd burns its 0.3 s meanwhile
        span.stop()
        assert 0.2 <= span.own < 1.0
        assert 0.2 <= span.children < 1.0
        assert span.tgtd is not None and 0.2 <= span.tgtd < 1.0
        row = iscsi_io.Row("seq-read", "bootinit", 1500, 100 * iscsi_io.MiB, 1.0, 1, 1, 1)
        span.stamp(row)
        assert row.cpu_ms_per_mib == pytest.approx(span.own * 10)
        assert row.target_ms_per_mib == pytest.approx(span.tgtd * 10)
        span.stamp(row, tool=True)
        assert row.cpu_ms_per_mib == pytest.approx(span.children * 10)
        assert iscsi_io.process_cpu(os.getpid()) > 0
    finally:
        FakeTgtd.popen.kill()
        FakeTgtd.popen.wait()
