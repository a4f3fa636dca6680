"""The benchmark run once for the tests of distillad.benchmark: generated demo data, 64 px, random
teachers, 1 epoch, rd + stfpm, 1 seed; interrupted after its first run, then rerun, then run again."""

from __future__ import annotations

import hashlib
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from distillad import api
from distillad.benchmark import run_benchmark
from distillad.demo_data import make_demo_dataset

MODELS = ["rd", "stfpm"]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="session")
def bench(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the test machine is shared; timings are not checked here
    root = tmp_path_factory.mktemp("bench")
    make_demo_dataset(root / "data", n_train=8, n_test_good=2, n_test_defect=2, size=64, seed=0)
    out = root / "out"
    kw = dict(models=MODELS, data=root / "data", categories=["washer"], seeds=1, epochs=1, out=out, image_size=64,
              batch_size=4, model_kwargs={"*": {"teacher_weights": "random"}}, quick=True, progress=False,
              timing=(0, 1, 1))
    real_train, real_fit = api.train, api.fit
    calls: list[str] = []

    def train_then_interrupt(model: str, *a: object, **k: object) -> dict:
        calls.append(model)
        if len(calls) == 2:  # "kill" the benchmark when the second run starts
            raise KeyboardInterrupt
        return real_train(model, *a, **k)

    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(api, "train", train_then_interrupt)
            with pytest.raises(KeyboardInterrupt):
                run_benchmark(**kw)
        first = out / "runs" / "washer" / "rd" / "seed0"
        interrupted = {"bench": (first / "bench.json").is_file(), "results": (out / "results.json").exists(),
                       "second": (out / "runs" / "washer" / "stfpm" / "seed0" / "run.json").exists()}
        before = ((first / "model.safetensors").stat().st_mtime_ns, _sha(first / "model.safetensors"))
        fits: list[str] = []

        def counting_fit(model: torch.nn.Module, *a: object, **k: object) -> list:
            fits.append(model.model_name)  # type: ignore[attr-defined]
            return real_fit(model, *a, **k)

        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(api, "fit", counting_fit)
            results = run_benchmark(**kw)
            after = ((first / "model.safetensors").stat().st_mtime_ns, _sha(first / "model.safetensors"))
            bench_json = (first / "bench.json").read_text()
            again = run_benchmark(**{**kw, "seeds": [0]}, plots=False)  # everything finished: nothing redone
    finally:
        torch.set_num_threads(threads)
    return SimpleNamespace(out=out, results=results, again=again, calls=calls, interrupted=interrupted,
                           before=before, after=after, fits=fits, first=first, bench_json=bench_json, kw=kw)
