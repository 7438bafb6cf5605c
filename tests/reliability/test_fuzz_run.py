"""The coverage-guided fuzzers (``python -m fuzz.run``) run briefly, every target.

CI runs this with a few seconds per target (``FUZZ_SECONDS``, default 3); a longer run
is ``python -m fuzz.run --seconds 60``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fuzz.targets import TARGETS

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.fuzz
def test_every_fuzz_target_runs_clean(tmp_path: Path) -> None:
    seconds = float(os.environ.get("FUZZ_SECONDS", "3"))
    cp = subprocess.run([sys.executable, "-m", "fuzz.run", "--seconds", str(seconds),
                         "--artifacts", str(tmp_path)], cwd=ROOT, capture_output=True,
                        text=True, timeout=len(TARGETS) * (seconds + 80))
    print(cp.stdout)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    lines = [ln for ln in cp.stdout.splitlines() if ln.split()[:1] and ln.split()[0] in TARGETS]
    assert sorted(ln.split()[0] for ln in lines) == sorted(TARGETS)
    for ln in lines:
        words = ln.split()
        assert words[1] == "ok", ln
        assert int(words[words.index("execs") + 1]) > 0, ln
    assert not list(tmp_path.iterdir()), "crash artifacts were written"


@pytest.mark.fuzz
@pytest.mark.parametrize("engine", ["atheris", "plain"])
@pytest.mark.parametrize("target,says", [("selftest", "a planted bug"),
                                         ("selftest_alloc", "MemoryError")])
def test_the_runner_reports_a_planted_bug(tmp_path: Path, engine: str, target: str,
                                          says: str) -> None:
    if engine == "atheris":
        pytest.importorskip("atheris")
    env = {**os.environ, "FUZZ_SELFTEST": "1"}
    cp = subprocess.run([sys.executable, "-m", "fuzz.run", "--seconds", "5", "--engine",
                         engine, "--artifacts", str(tmp_path), target], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=120)
    assert cp.returncode == 1, cp.stdout + cp.stderr
    assert target in cp.stdout and "FAILED" in cp.stdout
    assert says in cp.stdout
    if engine == "atheris":
        assert [p.name for p in tmp_path.iterdir() if p.name.startswith(f"{target}-crash-")]
