"""Run every fuzz target under atheris (coverage-guided libFuzzer), each for a bounded time.

::

    python -m fuzz.run                      # every target, 20 s each
    python -m fuzz.run --seconds 5 frames nbd
    python -m fuzz.run --corpus-out /tmp/c  # keep the inputs that found new coverage

Each target runs in its own process (``python -m fuzz.run --child NAME``): the project's
modules it exercises are instrumented (:data:`fuzz.targets.INSTRUMENT`), its seeds come
from ``fuzz/corpus/NAME/`` (read only; new inputs go to a scratch directory), and
libFuzzer stops it after ``--seconds``. A crash (any exception escaping the target: see
:mod:`fuzz.targets`), a hang (one input running longer than ``--timeout`` seconds) or
memory beyond ``--rss-limit-mb`` (RSS, and the address space: a runaway allocation is a
``MemoryError``) fails the target; its input is saved under
``--artifacts`` (default: a temporary directory, printed). The exit status is 0 when
every target ran clean, 1 otherwise.

atheris comes with the ``test`` extra (``pip install -e '.[test]'``). Without it the
runner falls back to a plain random mutator over the seeds (no coverage feedback), so
the bounded run still happens; it says so.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CORPUS = HERE / "corpus"


@dataclass
class Outcome:
    """What one target's run did."""

    target: str
    ok: bool
    engine: str
    execs: int
    coverage: int | None
    seconds: float
    detail: str = ""


# ------------------------------------------------------------------------- child


def _quiet() -> None:
    logging.disable(logging.CRITICAL)


def _limit_memory(mb: int) -> None:
    """Cap the child's address space: an input that makes the code under test allocate
    without bound gets a MemoryError (reported as a crash with its input) instead of
    slowly eating the machine."""
    import resource

    limit = mb << 20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def child_atheris(name: str, seconds: float, timeout: float, rss_mb: int, work: Path,
                  artifacts: Path, max_len: int) -> None:
    """Inside the child: instrument, then hand over to libFuzzer (never returns)."""
    import importlib

    import atheris

    _quiet()
    sys.path.insert(0, str(ROOT))
    with atheris.instrument_imports(include=["bootinit", "netstack", "firmware_tables"]):
        from fuzz import targets

        for mod in targets.INSTRUMENT[name]:
            importlib.import_module(mod)
        if name == "session":
            importlib.import_module("tests.unit.fake_target")
    fn = targets.TARGETS[name]

    def one(data: bytes) -> None:
        fn(data)

    args = [sys.argv[0], f"-max_total_time={max(1, int(seconds))}", f"-timeout={int(timeout)}",
            f"-rss_limit_mb={rss_mb}", f"-max_len={max_len}",
            f"-artifact_prefix={artifacts}/{name}-", "-print_final_stats=1", str(work)]
    if (CORPUS / name).is_dir():
        args.append(str(CORPUS / name))
    atheris.Setup(args, one)
    atheris.Fuzz()


def child_plain(name: str, seconds: float, seed: int) -> None:
    """No atheris: mutate the seeds at random for ``seconds`` (no coverage feedback)."""
    _quiet()
    sys.path.insert(0, str(ROOT))
    from fuzz import targets

    fn = targets.TARGETS[name]
    rng = random.Random(seed)
    seeds = [p.read_bytes() for p in sorted((CORPUS / name).glob("*"))] or [b"", b"seed"]
    end = time.monotonic() + seconds
    n = 0
    while time.monotonic() < end:
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 16)):
            op = rng.randrange(4)
            if op == 0 and data:
                data[rng.randrange(len(data))] = rng.randrange(256)
            elif op == 1:
                pos = rng.randrange(len(data) + 1)
                data[pos:pos] = rng.randbytes(rng.randint(1, 8))
            elif op == 2 and data:
                pos = rng.randrange(len(data))
                del data[pos:pos + rng.randint(1, 64)]
            elif data:
                data = data[:rng.randrange(len(data) + 1)]
        try:
            fn(bytes(data))
        except Exception:
            sys.stdout.write(f"==CRASH== input hex {bytes(data).hex()}\n")
            raise
        n += 1
    sys.stdout.write(f"#{n} DONE plain random mutation\n")


# ------------------------------------------------------------------------ parent

_COV = re.compile(r"cov: (\d+)")
_EXECS = re.compile(r"#(\d+)\s+DONE")
_RUNS = re.compile(r"stat::number_of_executed_units:\s*(\d+)")


def _text(b: bytes | str | None) -> str:
    if b is None:
        return ""
    return b if isinstance(b, str) else b.decode(errors="replace")


def have_atheris() -> bool:
    try:
        import atheris  # noqa: F401
    except ImportError:
        return False
    return True


def run_target(name: str, seconds: float, *, timeout: float, rss_mb: int, artifacts: Path,
               corpus_out: Path | None, max_len: int, engine: str) -> Outcome:
    work_ctx = tempfile.TemporaryDirectory(prefix=f"fuzz-{name}-")
    with work_ctx as tmp:
        work = corpus_out / name if corpus_out is not None else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        argv = [sys.executable, "-m", "fuzz.run", "--child", name, "--seconds", str(seconds),
                "--timeout", str(timeout), "--rss-limit-mb", str(rss_mb),
                "--work", str(work), "--artifacts", str(artifacts), "--max-len", str(max_len),
                "--engine", engine]
        env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get(
            "PYTHONPATH", "")}
        t0 = time.monotonic()
        # the hard limit: libFuzzer's own time plus start-up and the last input's timeout
        try:
            cp = subprocess.run(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True,
                                timeout=seconds + timeout + 60)
            out = cp.stdout
            rc = cp.returncode
        except subprocess.TimeoutExpired as e:
            out = _text(e.stdout) + _text(e.stderr)
            rc = -1
            out += "\nthe fuzzer did not stop on time"
        took = time.monotonic() - t0
    covs = _COV.findall(out)
    runs = _RUNS.findall(out) or _EXECS.findall(out)
    ok = rc == 0
    detail = ""
    if not ok:
        lines = out.strip().splitlines()
        # the Python traceback (atheris prints it before libFuzzer's report), then the end
        start = next((i for i, ln in enumerate(lines) if "Uncaught Python exception" in ln
                      or ln.startswith("Traceback")), max(0, len(lines) - 40))
        tail = "\n".join(lines[start:start + 60])
        detail = f"exit status {rc}\n{tail}"
    return Outcome(name, ok, engine, int(runs[-1]) if runs else 0,
                   int(covs[-1]) if covs else None, took, detail)


def main(argv: list[str] | None = None) -> int:
    from fuzz.targets import TARGETS

    ap = argparse.ArgumentParser(description="Run the fuzz targets for a bounded time.")
    ap.add_argument("targets", nargs="*", help=f"targets (default: all of {', '.join(TARGETS)})")
    ap.add_argument("--seconds", type=float, default=20.0, help="per target (default 20)")
    ap.add_argument("--timeout", type=float, default=10.0,
                    help="one input running longer is a hang (default 10 s)")
    ap.add_argument("--rss-limit-mb", type=int, default=1024,
                    help="memory limit of each fuzzer process (RSS and address space)")
    ap.add_argument("--max-len", type=int, default=65536)
    ap.add_argument("--artifacts", type=Path, default=None,
                    help="where crashing inputs are saved (default: a temporary directory)")
    ap.add_argument("--corpus-out", type=Path, default=None,
                    help="keep new inputs here, one directory per target")
    ap.add_argument("--engine", choices=("auto", "atheris", "plain"), default="auto")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.child:
        _limit_memory(args.rss_limit_mb)
        if args.engine == "atheris":
            child_atheris(args.child, args.seconds, args.timeout, args.rss_limit_mb, args.work,
                          args.artifacts, args.max_len)
        else:
            child_plain(args.child, args.seconds, seed=int(time.time()))
        return 0

    names = args.targets or list(TARGETS)
    unknown = [n for n in names if n not in TARGETS]
    if unknown:
        ap.error(f"unknown target(s): {', '.join(unknown)}")
    engine = args.engine
    if engine == "auto":
        engine = "atheris" if have_atheris() else "plain"
    if engine == "plain":
        print("atheris is not installed: random mutation of the seeds, no coverage feedback")
    artifacts = args.artifacts or Path(tempfile.mkdtemp(prefix="fuzz-artifacts-"))
    artifacts.mkdir(parents=True, exist_ok=True)
    failed = 0
    for name in names:
        o = run_target(name, args.seconds, timeout=args.timeout, rss_mb=args.rss_limit_mb,
                       artifacts=artifacts, corpus_out=args.corpus_out, max_len=args.max_len,
                       engine=engine)
        cov = "-" if o.coverage is None else str(o.coverage)
        print(f"{name:12} {'ok' if o.ok else 'FAILED':6} {o.engine:8} execs {o.execs:8} "
              f"cov {cov:>6} {o.seconds:6.1f} s", flush=True)
        if not o.ok:
            failed += 1
            print(o.detail)
    if failed:
        print(f"{failed} target(s) failed; inputs in {artifacts}")
    elif args.artifacts is None:
        os.rmdir(artifacts) if not any(artifacts.iterdir()) else None
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
