"""Load test of ``distillad serve`` on loopback: throughput, latency percentiles, errors and server RSS
at several concurrencies, micro-batched (``--max-batch 16``) against ``--max-batch 1`` in the same run.

Two servers are started as ``distillad serve`` subprocesses on free 127.0.0.1 ports, and each
concurrency level is run against both in turn (interleaved, so a change of machine load hits both).
Every level is bounded by ``--requests`` and ``--max-seconds``; the script stops by itself and
never contacts anything but 127.0.0.1. The client is stdlib ``http.client`` in threads, one
keep-alive connection each, POSTing a raw PNG body to ``/v1/predict``.

Without ``--run`` it trains a throw-away RD run (random teacher, one epoch on generated images) at
``--image-size``: its scores mean nothing, its compute is the real RD network's at that size.

    PYTHONPATH=src .venv/bin/python benchmarks/bench_serve.py                       # the committed table
    PYTHONPATH=src .venv/bin/python benchmarks/bench_serve.py --soak-minutes 10     # soak (not run in CI)

The soak variant runs one micro-batched server at concurrency 8 for the given minutes and reports
RSS once a minute (memory growth shows there), with the same error count.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import itertools
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import command_line  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "serve.md"
BOTTLE = Path("mvtec_ad/bottle/test")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _get(port: int, path: str) -> dict[str, Any]:
    return json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10).read())


class Server:
    """``distillad serve`` in a subprocess; ``stats()`` reads its batch counters from /v1/model."""

    def __init__(self, run: Path, max_batch: int, args: argparse.Namespace, log: Path) -> None:
        self.port, self.max_batch = _free_port(), max_batch
        cmd = [sys.executable, "-m", "distillad", "serve", "--run", str(run), "--port", str(self.port),
               "--max-batch", str(max_batch), "--max-wait-ms", str(args.max_wait_ms), "--max-queue", "512",
               "--device", "cpu", "--threads", str(args.threads)]
        self.log = open(log, "w")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT)
        t0 = time.monotonic()
        while True:
            try:
                if _get(self.port, "/readyz").get("status") == "ready":
                    break
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() - t0 > 120:
                raise SystemExit(f"server did not start: {log.read_text()[-2000:]}")
            time.sleep(0.2)

    def stats(self) -> dict[str, Any]:
        return _get(self.port, "/v1/model")["serving"]

    def rss(self) -> float:
        return _rss_mb(self.proc.pid)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def load(port: int, bodies: list[bytes], n: int, concurrency: int, max_seconds: float) -> dict[str, Any]:
    """``n`` POSTs (or until ``max_seconds``) from ``concurrency`` threads; latencies of the 200s, errors."""
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    counter = itertools.count()
    deadline = time.monotonic() + max_seconds

    def worker() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        while True:
            i = next(counter)
            if i >= n or time.monotonic() > deadline:
                break
            t0 = time.perf_counter()
            try:
                conn.request("POST", "/v1/predict", body=bodies[i % len(bodies)], headers={"Content-Type": "image/png"})
                r = conn.getresponse()
                r.read()
            except (OSError, http.client.HTTPException) as e:
                errors[type(e).__name__] += 1
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                continue
            if r.status == 200:
                latencies.append(time.perf_counter() - t0)
            else:
                errors[f"HTTP {r.status}"] += 1
        conn.close()

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    q = statistics.quantiles(latencies, n=100) if len(latencies) >= 2 else [float("nan")] * 99
    return {"ok": len(latencies), "errors": dict(errors), "wall_s": wall, "req_per_s": len(latencies) / wall,
            "p50_ms": q[49] * 1e3, "p95_ms": q[94] * 1e3, "p99_ms": q[98] * 1e3}


def make_run(image_size: int, root: Path) -> Path:
    """A throw-away RD run: random teacher, one epoch on generated images."""
    from distillad import api
    from distillad.demo_data import make_demo_dataset
    data = make_demo_dataset(root / "data", n_train=12, n_test_good=1, n_test_defect=1, size=image_size, seed=0)
    api.train(model="rd", data=data, out=root / "run", epochs=1, batch_size=4, image_size=image_size,
              teacher_weights="random", val_fraction=0.25, progress=False, device="cpu")
    return root / "run"


def request_bodies(run: Path, n: int = 8) -> tuple[list[bytes], str]:
    """PNG bodies to send: MVTec bottle test images when the data is there, else the run's generated ones."""
    from distillad.checkpoint import read_run_spec
    from distillad.data import find_data_root
    root = find_data_root()
    files = sorted((root / BOTTLE).glob("*/*.png"))[:n] if root is not None else []
    what = f"{len(files)} MVTec AD bottle test PNGs (512x512)"
    if not files:
        files = sorted(Path(read_run_spec(run)["data"]["path"]).glob("test/*/*.png"))[:n]
        what = f"{len(files)} generated test PNGs"
    return [f.read_bytes() for f in files], what


def render(rows: list[dict[str, Any]], repeat: dict[int, dict[str, Any]], meta: dict[str, Any]) -> str:
    out = [f"# `distillad serve` load test ({meta['date']})", "",
           f"Command: `{meta['command']}`", "",
           f"Machine: {meta['machine']}. **Shared and loaded by other sessions during the run** (load average "
           f"{meta['load_before']} before, {meta['load_after']} after, on {meta['cores']} cores): absolute "
           "numbers are pessimistic and noisy; the ratios compare servers measured in the same minutes.", "",
           f"Run: {meta['run']}. Requests: {meta['bodies']}, raw `image/png` bodies to `POST /v1/predict`, "
           f"JSON answers. Server: `--threads {meta['threads']} --max-wait-ms {meta['max_wait_ms']} --device cpu`; "
           f"up to {meta['requests']} requests or {meta['max_seconds']} s per row; the client (stdlib "
           "http.client, one keep-alive connection per thread) runs on the same cores.", "",
           "| server | concurrency | requests | errors | req/s | p50 ms | p95 ms | p99 ms | mean batch | RSS before → after MB |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        errs = sum(r["errors"].values())
        out.append(f"| --max-batch {r['max_batch']} | {r['concurrency']} | {r['ok'] + errs} | {errs} | "
                   f"{r['req_per_s']:.1f} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} | {r['p99_ms']:.1f} | "
                   f"{r['mean_batch']:.2f} | {r['rss_before']:.0f} → {r['rss_after']:.0f} |")
    out += ["", "Micro-batching gain (throughput of `--max-batch "
            f"{meta['max_batch']}` / `--max-batch 1`, same concurrency):", "",
            "| concurrency | gain | p99 ratio |", "|---:|---:|---:|"]
    for c in meta["concurrency"]:
        a = next(r for r in rows if r["concurrency"] == c and r["max_batch"] == meta["max_batch"])
        b = next(r for r in rows if r["concurrency"] == c and r["max_batch"] == 1)
        out.append(f"| {c} | {a['req_per_s'] / b['req_per_s']:.2f}x | {a['p99_ms'] / b['p99_ms']:.2f} |")
    out += ["", "RSS: the server process's resident memory after warm-up and 50 requests, and after all its "
            "rows (the first pass at a higher concurrency raises the high-water mark: more images decoded and "
            "batched at once). Growth check, the highest concurrency run once more on each server:", "",
            "| server | concurrency | requests | errors | RSS before → after MB |", "|---|---:|---:|---:|---|"]
    for b, r in repeat.items():
        out.append(f"| --max-batch {b} | {r['concurrency']} | {r['ok'] + r['errors']} | {r['errors']} | "
                   f"{r['before']:.0f} → {r['after']:.0f} |")
    out += ["", "Soak variant (10 minutes at concurrency 8, RSS each minute), not run here: "
            "`PYTHONPATH=src .venv/bin/python benchmarks/bench_serve.py --soak-minutes 10`.", ""]
    return "\n".join(out)


def soak(run: Path, args: argparse.Namespace, bodies: list[bytes], tmp: Path) -> None:
    srv = Server(run, args.max_batch, args, tmp / "soak.log")
    try:
        load(srv.port, bodies, 50, 1, 60)
        print(f"minute 0: RSS {srv.rss():.0f} MB", flush=True)
        for minute in range(1, args.soak_minutes + 1):
            r = load(srv.port, bodies, 10**9, 8, 60)
            print(f"minute {minute}: {r['ok']} ok, errors {r['errors']}, {r['req_per_s']:.1f} req/s, "
                  f"p99 {r['p99_ms']:.1f} ms, RSS {srv.rss():.0f} MB", flush=True)
    finally:
        srv.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", type=Path, help="run folder to serve (default: a throw-away random-teacher RD run)")
    ap.add_argument("--image-size", type=int, default=64, help="of the throw-away run (default: 64)")
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--max-batch", type=int, default=16)
    ap.add_argument("--max-wait-ms", type=float, default=5.0)
    ap.add_argument("--threads", type=int, default=1, help="server torch threads (default: 1)")
    ap.add_argument("--max-seconds", type=float, default=150.0, help="cap per row")
    ap.add_argument("--soak-minutes", type=int, default=0, help="instead: soak test for this many minutes")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    os.environ.setdefault("DISTILLAD_PROGRESS", "0")
    with tempfile.TemporaryDirectory(prefix="bench_serve_") as tmpdir:
        tmp = Path(tmpdir)
        run = args.run or make_run(args.image_size, tmp)
        bodies, what = request_bodies(run)
        if args.soak_minutes:
            return soak(run, args, bodies, tmp)
        load_before = " ".join(f"{x:.1f}" for x in os.getloadavg())
        servers = {b: Server(run, b, args, tmp / f"serve_{b}.log") for b in (args.max_batch, 1)}
        rows: list[dict[str, Any]] = []
        repeat: dict[int, dict[str, Any]] = {}
        try:
            rss0 = {}
            for b, srv in servers.items():
                load(srv.port, bodies, 50, 4, 60)  # warm the HTTP path too
                rss0[b] = srv.rss()
            for c in args.concurrency:
                for b, srv in servers.items():
                    s0 = srv.stats()
                    r = load(srv.port, bodies, args.requests, c, args.max_seconds)
                    s1 = srv.stats()
                    r.update(max_batch=b, concurrency=c, rss_before=rss0[b], rss_after=srv.rss(),
                             mean_batch=(s1["items"] - s0["items"]) / max(s1["batches"] - s0["batches"], 1))
                    print(json.dumps(r), flush=True)
                    rows.append(r)
            c = args.concurrency[-1]  # the same load again: memory must stay where the first pass left it
            for b, srv in servers.items():
                before = srv.rss()
                r = load(srv.port, bodies, args.requests, c, args.max_seconds)
                repeat[b] = {"concurrency": c, "before": before, "after": srv.rss(), "ok": r["ok"],
                             "errors": sum(r["errors"].values())}
                print(json.dumps({"repeat": b, **repeat[b]}), flush=True)
        finally:
            for srv in servers.values():
                srv.stop()
        spec = json.loads((run / "run.json").read_text())
        meta = {"date": dt.date.today().isoformat(), "command": command_line(sys.argv, "PYTHONPATH=src .venv/bin/python"), "machine": f"{platform.processor() or platform.machine()}, "
                f"{platform.python_implementation()} {platform.python_version()}",
                "cores": os.cpu_count(), "load_before": load_before,
                "load_after": " ".join(f"{x:.1f}" for x in os.getloadavg()),
                "run": (f"`{args.run}`" if args.run else "throw-away RD run, **random teacher** (1 epoch on generated "
                        "images)") + f", {spec['method']} / {spec['teacher']['name']} at {spec['image_size']} px",
                "bodies": what, "threads": args.threads, "max_wait_ms": args.max_wait_ms, "requests": args.requests,
                "max_seconds": args.max_seconds, "max_batch": args.max_batch, "concurrency": args.concurrency}
        text = render(rows, repeat, meta)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
        print(text)


if __name__ == "__main__":
    main()
