"""bench/run_all.py's rounds: medians, ranges, per-round ratios and goal verdicts; the
same-MTU iscsi-perf reference (a veth row per MTU) in run_all and bench/iscsi_io.py.

Pure functions over hand-made rows; nothing is measured, no root needed.
"""

from __future__ import annotations

import dataclasses
import json

import pytest

from bench import iscsi_io, run_all
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


# --------------------------------------------------------------------------- same MTU


def veth_rounds(ours: dict[int, list[float]], loop: list[float], veth: dict[int, list[float]],
                qemu: list[float]) -> list[list[Row]]:
    """Per round: bootinit seq-read rows per MTU, iscsi-perf over a veth of each MTU
    (put *before* the loopback row, so a lookup that ignores the MTU would find them
    first), iscsi-perf over loopback (MTU None) and qemu-img."""
    rounds = []
    for k, (p, q) in enumerate(zip(loop, qemu, strict=True)):
        rnd = [mb("iscsi", "seq-read", "bootinit", mtu, "on", vs[k]) for mtu, vs in ours.items()]
        rnd += [mb("iscsi", "seq-read", "iscsi-perf", mtu, "-", vs[k], check="-")
                for mtu, vs in veth.items()]
        rnd += [mb("iscsi", "seq-read", "iscsi-perf", None, "-", p, check="-"),
                mb("iscsi", "seq-read", "qemu-img", None, "-", q, check="-")]
        rounds.append(rnd)
    return rounds


def bootinit_at(rows: list[Row], mtu: int, test: str = "seq-read") -> Row:
    (r,) = [r for r in rows if r.who == "bootinit" and r.mtu == mtu and r.test == test]
    return r


def test_same_mtu_ratio_uses_the_veth_row_of_that_mtu() -> None:
    rounds = veth_rounds({1500: [100, 120, 110], 65520: [200, 240, 220]},
                         loop=[400, 400, 400],
                         veth={1500: [200, 300, 250], 65520: [380, 400, 390]},
                         qemu=[300, 300, 300])
    for k, rnd in enumerate(rounds):
        rnd.append(mb("iscsi", "seq-read-1st", "bootinit", 1500, "on", 50.0 + k))
        rnd.append(mb("iscsi", "seq-write", "bootinit", 1500, "on", 90.0))
    rows = aggregate(rounds)
    add_ratios(rows, SETTINGS)
    at1500, at65520 = bootinit_at(rows, 1500), bootinit_at(rows, 65520)
    assert at1500.ratios[iscsi_io.SAME_MTU_RATIO] == pytest.approx(110 / 250)
    assert at65520.ratios[iscsi_io.SAME_MTU_RATIO] == pytest.approx(220 / 390)
    # the per-round machinery carries it: each round against that round's veth row
    assert at1500.round_ratios[iscsi_io.SAME_MTU_RATIO] == pytest.approx(
        [100 / 200, 120 / 300, 110 / 250])
    assert at65520.round_ratios[iscsi_io.SAME_MTU_RATIO] == pytest.approx(
        [200 / 380, 240 / 400, 220 / 390])
    # the plain iscsi-perf ratio stays against the loopback row
    assert at1500.ratios["iscsi-perf"] == pytest.approx(110 / 400)
    assert at65520.round_ratios["iscsi-perf"] == pytest.approx([0.5, 0.6, 0.55])
    # seq-read-1st: against the tools' seq-read, the veth row of its MTU too
    first = bootinit_at(rows, 1500, "seq-read-1st")
    assert first.ratios[iscsi_io.SAME_MTU_RATIO] == pytest.approx(51 / 250)
    assert first.ratios["iscsi-perf"] == pytest.approx(51 / 400) and first.goals == {}
    # the seq-read rows' like-for-like goal: each round against that round's veth row
    assert at1500.goal_round_ratios["seq-read@mtu"] == pytest.approx(
        [100 / 200, 120 / 300, 110 / 250])
    assert at65520.goal_ratios["seq-read@mtu"] == pytest.approx(220 / 390)
    assert "seq-read@mtu" not in bootinit_at(rows, 1500, "seq-write").goals
    # not for other tests; not for the tool rows themselves
    assert iscsi_io.SAME_MTU_RATIO not in bootinit_at(rows, 1500, "seq-write").ratios
    assert all(r.ratios == {} for r in rows if r.who != "bootinit")
    text = run_all.table(rows, goal_summary(rows), _info(3))
    line = next(x for x in text.splitlines()
                if x.startswith("iscsi  seq-read ") and x.split()[2:4] == ["bootinit", "1500"])
    assert "0.28/iscsi-perf  0.37/qemu-img  0.44/iscsi-perf@mtu" in line, line
    assert ("(ratio iscsi-perf@mtu, and the goal seq-read@mtu; the other goals against "
            "the loopback rows)") in text
    veth_lines = [x for x in text.splitlines() if x.split()[2:4] == ["iscsi-perf", "1500"]]
    assert len(veth_lines) == 1, text


@pytest.mark.parametrize("veth", [50.0, 3000.0], ids=["veth-slower", "veth-faster"])
def test_goal_stays_against_the_loopback_libiscsi(veth: float) -> None:
    """The seq-read goal is judged against the faster of the loopback iscsi-perf row and
    qemu-img, whether the veth row of the same MTU is slower or faster than both."""
    rows = aggregate(veth_rounds({1500: [160, 180]}, loop=[200, 200],
                                 veth={1500: [veth, veth]}, qemu=[150, 250]))
    add_ratios(rows, SETTINGS)
    ours = bootinit_at(rows, 1500)
    assert ours.goal_round_ratios["seq-read"] == pytest.approx([160 / 200, 180 / 250])
    assert ours.goal_ratios["seq-read"] == pytest.approx((0.8 + 0.72) / 2)
    assert ours.goals["seq-read"] is False
    assert ours.ratios["iscsi-perf"] == pytest.approx(170 / 200)
    assert ours.ratios[iscsi_io.SAME_MTU_RATIO] == pytest.approx(170 / veth)
    (g,) = [g for g in goal_summary(rows) if g["goal"] == "seq-read"]
    assert g["best_ratio"] == pytest.approx(0.76)


def test_same_mtu_goal_judged_against_the_veth_row_of_the_rows_mtu() -> None:
    """``seq-read@mtu``: the median of per-round ratios against iscsi-perf over the veth
    of the row's MTU, met at 0.8 whatever the loopback goal says; a row whose MTU has no
    veth row cannot be judged (None, not False); the summary and table name both goals."""
    rows = aggregate(veth_rounds({1500: [160, 180, 170], 65520: [300, 300, 300]},
                                 loop=[400, 400, 400], veth={1500: [200, 200, 250]},
                                 qemu=[100, 100, 100]))
    add_ratios(rows, SETTINGS)
    ours = bootinit_at(rows, 1500)
    assert ours.goal_round_ratios["seq-read@mtu"] == pytest.approx([0.8, 0.9, 0.68])
    assert ours.goal_ratios["seq-read@mtu"] == pytest.approx(0.8)
    assert ours.goals["seq-read@mtu"] is True
    assert ours.goals["seq-read"] is False  # 170/400 against the loopback row
    assert bootinit_at(rows, 65520).goals["seq-read@mtu"] is None
    summary = {g["goal"]: g for g in goal_summary(rows)}
    assert summary["seq-read@mtu"]["judged"] == 1 and summary["seq-read@mtu"]["met"] == 1
    assert summary["seq-read@mtu"]["rows"] == 2 and summary["seq-read"]["met"] == 0
    text = run_all.table(rows, list(summary.values()), _info(3))
    line = next(x for x in text.splitlines()
                if x.startswith("iscsi  seq-read ") and x.split()[2:4] == ["bootinit", "1500"])
    assert ">=0.8x libiscsi@mtu: met (0.80; per round 0.68-0.90)" in line, line
    assert ">=0.8x libiscsi: NOT met" in line, line
    assert "seq read >= 0.8x libiscsi at the same MTU (iscsi-perf, veth)" in text


def test_expected_rows_include_one_veth_row_per_mtu() -> None:
    s = dataclasses.replace(SETTINGS, mtus=[1500, 9000, 65520])
    keys = run_all.expected_rows("iscsi", s)
    assert len(keys) == len(set(keys))
    perf = sorted(((k[1], k[3]) for k in keys if k[2] == "iscsi-perf"),
                  key=lambda x: (x[0], -1 if x[1] is None else x[1]))
    assert perf == [("rand-read-qd1", None), ("rand-read-qd32", None), ("seq-read", None),
                    ("seq-read", 1500), ("seq-read", 9000), ("seq-read", 65520)]
    assert {k[4] for k in keys if k[2] != "bootinit"} == {"-"}
    assert sorted((k[1], k[3]) for k in keys if k[2] == "qemu-img") == [
        ("seq-read", None), ("seq-write", None)]
    # a tool missing or failing: n/a / FAIL rows for the same keys
    assert run_all._tool_tests(["iscsi-perf"], [1500]) == [
        ("seq-read", "iscsi-perf", None), ("seq-read", "iscsi-perf", 1500),
        ("rand-read-qd1", "iscsi-perf", None), ("rand-read-qd32", "iscsi-perf", None)]


def test_iscsi_io_ratios_against_loopback_and_same_mtu() -> None:
    """bench/iscsi_io.py: ``ratio_iscsi_perf`` stays against the loopback row even with
    veth rows of the same test after it, ``ratio_iscsi_perf_mtu`` is against the veth
    row of the row's MTU (seq-read and seq-read-1st only), rows sort with MTU None
    first, and the table has the column."""

    def row(test: str, who: str, mtu: int | None, mb_per_s: float) -> iscsi_io.Row:
        return iscsi_io.Row(test, who, mtu, int(mb_per_s * 1e6), 1.0, 1, iscsi_io.MiB, 16)

    rows = [row("seq-read", "iscsi-perf", 9000, 2500.0),
            row("seq-read", "bootinit", 1500, 1000.0),
            row("seq-read", "iscsi-perf", 1500, 2000.0),
            row("seq-read-1st", "bootinit", 1500, 500.0),
            row("seq-read", "bootinit", 65520, 1500.0),  # no veth row of its MTU
            row("seq-write", "bootinit", 1500, 800.0),
            row("seq-write", "qemu-img", None, 1000.0),
            row("seq-read", "qemu-img", None, 1250.0),
            row("seq-read", "iscsi-perf", None, 2700.0)]
    iscsi_io.sort_rows(rows)
    assert [(r.test, r.initiator, r.mtu) for r in rows][:6] == [
        ("seq-read", "bootinit", 1500), ("seq-read", "bootinit", 65520),
        ("seq-read", "iscsi-perf", None), ("seq-read", "iscsi-perf", 1500),
        ("seq-read", "iscsi-perf", 9000), ("seq-read", "qemu-img", None)]
    iscsi_io.add_ratios(rows)
    got = {(r.test, r.mtu): r for r in rows if r.initiator == "bootinit"}
    seq = got[("seq-read", 1500)]
    assert seq.ratio_iscsi_perf == pytest.approx(1000 / 2700)
    assert seq.ratio_iscsi_perf_mtu == pytest.approx(1000 / 2000)
    assert seq.ratio_qemu_img == pytest.approx(1000 / 1250)
    first = got[("seq-read-1st", 1500)]
    assert first.ratio_iscsi_perf == pytest.approx(500 / 2700)
    assert first.ratio_iscsi_perf_mtu == pytest.approx(500 / 2000)
    assert got[("seq-read", 65520)].ratio_iscsi_perf == pytest.approx(1500 / 2700)
    assert got[("seq-read", 65520)].ratio_iscsi_perf_mtu is None
    write = got[("seq-write", 1500)]
    assert write.ratio_iscsi_perf is None and write.ratio_iscsi_perf_mtu is None
    assert write.ratio_qemu_img == pytest.approx(0.8)
    assert all(r.ratio_iscsi_perf_mtu is None for r in rows if r.initiator != "bootinit")
    assert seq.as_dict()["ratio_iscsi_perf_mtu"] == pytest.approx(0.5)
    info = {"size": 1 << 30, "lun_dir": "/dev/shm", "request": iscsi_io.MiB, "seq_qd": 16}
    text = iscsi_io.table(rows, info)
    head = next(x for x in text.splitlines() if x.startswith("test "))
    assert head.split()[7:10] == ["/iscsi-perf", "/perf@MTU", "/qemu-img"], head
    line = next(x for x in text.splitlines() if x.split()[:3] == ["seq-read", "bootinit",
                                                                  "1500"])
    assert line.split()[7:10] == ["0.37", "0.50", "0.80"], line


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
