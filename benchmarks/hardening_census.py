"""Census of bad-input and fault cases (issue "Hardening"): run the tables of ``tests/hardening`` against a
source tree and classify each outcome, so the closing note can count before and after.

    python benchmarks/hardening_census.py --src src                      # this tree
    python benchmarks/hardening_census.py --src /path/to/old/checkout/src   # e.g. a worktree at an older commit

Classes: ``handled`` (exit 2, one line), ``traceback`` (an exception escaped), ``accepted`` (exit 0 where
the input is bad), ``damaged`` (a refused or accepted command changed files it does not own). One process
per tree: each case is a ``distillad.cli.main`` call (stderr captured), on a tiny generated dataset
and a 1-epoch random-teacher run. Writes a markdown table to stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _worker(src: str) -> list[dict]:
    sys.path.insert(0, src)
    sys.path.insert(0, str(ROOT / "tests"))
    os.environ["DISTILLAD_PROGRESS"] = "0"
    import torch
    torch.set_num_threads(1)
    try:
        import distillad.run_schema  # noqa: F401
    except ImportError:  # an older tree: the test tables import seal(), which it lacks (and does not need)
        import types
        sys.modules["distillad.run_schema"] = types.SimpleNamespace(seal=lambda spec: spec)  # type: ignore
    from hardening.test_flags import TEST_CASES, TRAIN_CASES
    from hardening.test_run_json import _DELETE, EDITS, _set
    from helpers.hardening import TINY_FLAGS, fingerprint

    from distillad.cli import main
    from distillad.demo_data import make_demo_dataset
    tmp = Path(tempfile.mkdtemp())
    data = make_demo_dataset(tmp / "d", n_train=10, n_test_good=2, n_test_defect=2, size=64, seed=1)
    rows: list[dict] = []

    def call(kind: str, name: str, argv: list, watch: Path | None = None, ok_means: str = "accepted") -> None:
        before = fingerprint(watch) if watch is not None and watch.exists() else None
        err = io.StringIO()
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                code = main([str(a) for a in argv])
        except SystemExit as e:
            code = e.code
        except BaseException as e:  # noqa: BLE001 - the census counts them
            rows.append({"kind": kind, "case": name, "outcome": "traceback", "detail": type(e).__name__})
            return
        text = err.getvalue().strip()
        changed = before is not None and fingerprint(watch) != before
        outcome = ("damaged" if changed else ok_means if code == 0 else
                   "handled" if text.count("\n") == 0 else "handled (multi-line)")
        rows.append({"kind": kind, "case": name, "outcome": outcome, "detail": text.splitlines()[-1][:90] if text else ""})

    base = ["train", "--model", "rd", "--data", data, *TINY_FLAGS]
    for extra, _ in TRAIN_CASES:
        out = tmp / f"o{len(rows)}"
        call("train flag", " ".join(extra), [*[a for a in base if not ("--model" in extra and a in ("--model", "rd"))],
                                              "--out", out, *extra], data)
    run = tmp / "run"
    main([str(a) for a in [*base, "--out", run]])
    for extra, _ in TEST_CASES:
        call("test flag", " ".join(extra), ["test", "--run", run, *extra])
    for field, value, _reseal, _ in EDITS:
        r = tmp / f"r{len(rows)}"
        shutil.copytree(run, r)
        spec = json.loads((r / "run.json").read_text())
        try:
            _set(spec, field, value)
        except KeyError:
            rows.append({"kind": "run.json edit", "case": field, "outcome": "n/a", "detail": "field absent"})
            continue
        (r / "run.json").write_text(json.dumps(spec))
        call("run.json edit", f"{field}={'<deleted>' if value is _DELETE else repr(value)}", ["test", "--run", r])
    # folder states
    stale = tmp / "stale"
    stale.mkdir()
    (stale / "train_log.jsonl").write_text('{"epoch": 7}\n')
    call("folder", "train into a folder with a stale train_log.jsonl", [*base, "--out", stale], stale)
    call("folder", "train again into a finished run", [*base, "--out", run], run)
    call("folder", "--out inside the data folder", [*base, "--out", data / "train" / "x"], data)
    bad = tmp / "bad"
    shutil.copytree(data, bad)
    sorted((bad / "train" / "good").iterdir())[3].write_bytes(b"\x89PNG no")
    call("folder", "corrupt training image: run folder left behind?",
         [bad if a == data else a for a in base] + ["--out", tmp / "cb"])
    if (tmp / "cb" / "run.json").exists():
        rows[-1]["outcome"] = "left a folder"
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--src", default=str(ROOT / "src"))
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        print(json.dumps(_worker(a.src)))
        return
    res = subprocess.run([sys.executable, __file__, "--worker", "--src", a.src], capture_output=True, text=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    if res.returncode != 0:
        sys.exit(res.stderr[-3000:])
    rows = json.loads(res.stdout.strip().splitlines()[-1])
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["outcome"]] = counts.get(r["outcome"], 0) + 1
    print(f"source: {a.src}\n\n" + ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())) + f" (of {len(rows)})\n")
    print("| kind | case | outcome | message (last line) |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['kind']} | `{r['case']}` | {r['outcome']} | {r['detail'].replace('|', '/')} |")


if __name__ == "__main__":
    main()
