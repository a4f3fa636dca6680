"""Does ``torch.compile`` pay on this CPU? rd (default teacher, random weights) forward on 4 images, 256 px,
one thread: eager inference copy vs ``torch.compile(model.forward)``, interleaved, plus the compile time.

    PYTHONPATH=src python benchmarks/try_compile.py

``model.predict`` itself does not compile (dynamo fails on the map stage's numpy-backed operator cache), so
only the networks are compiled; the map stage is a few small matmuls anyway (speed.md). Session 9: the
compiled forward is many times *slower*: dynamo re-traces the teacher's ``runner`` cache (a folded deep copy
checked against the weights' versions) and recompiles ``copy.deepcopy`` on every call
(``TORCH_LOGS=recompiles``). Compiling would need the runner built outside the traced function; not done.
"""

from __future__ import annotations

import statistics
import time

import torch

from distillad.precision import prepare_for_inference
from distillad.registry import create_model


def _flat(out: object) -> torch.Tensor:
    return torch.cat([t.flatten() for t in torch.utils._pytree.tree_leaves(out)])


def main() -> None:
    torch.set_num_threads(1)
    m = prepare_for_inference(create_model("rd", teacher_weights="random").eval(), torch.device("cpu"))
    x = torch.rand(4, 3, 256, 256).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        t0 = time.perf_counter()
        c = torch.compile(m.forward, dynamic=False)
        c(x)
        t_compile = time.perf_counter() - t0
        diff = float((_flat(m(x)) - _flat(c(x))).abs().max())
        times: dict[str, list[float]] = {"eager": [], "compiled": []}
        for r in range(6):
            for k, f in (("eager", m), ("compiled", c)):
                t1 = time.perf_counter()
                f(x)
                if r:
                    times[k].append(time.perf_counter() - t1)
    ms = {k: 1e3 * statistics.median(v) / len(x) for k, v in times.items()}
    print(f"compile + first call {t_compile:.1f} s; max feature difference {diff:.2g}; ms/img eager "
          f"{ms['eager']:.1f}, compiled {ms['compiled']:.1f} ({ms['eager'] / ms['compiled']:.2f}× eager)")


if __name__ == "__main__":
    main()
