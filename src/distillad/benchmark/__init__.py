"""``distillad benchmark``: train and evaluate every (model, category, seed) on real data, under
one protocol, and write ``results.json``, ``results.md`` and plots.

Protocol (the same for every method; written at the top of ``results.md``):
- same teacher (``--teacher``, default efficientnet_lite0, with its weights' SHA-256), image
  size, number of epochs and seeds for every method; batch size is each method's paper
  setting unless ``--batch-size`` is given;
- the last epoch's model is evaluated (no model selection on test images);
- thresholds come from the validation split of good training images (``api.train``);
- test images are touched only by ``api.test`` for the final metrics.

Layout of ``--out``::

    OUT/runs/<category-slug>/<model>/seed<k>/   run folder (api.train / api.test) + bench.json
    OUT/results.json                            every run + summary + paper comparison (RESULTS_SCHEMA)
    OUT/results.md                              tables: per category, overall, paper figures
    OUT/plots/<metric>.png                      bar chart per metric (error bars: std over seeds)
    OUT/plots/overlays_<category-slug>_<model>.png   heat maps on the same test images for every model
    OUT/plots/overlays_<category-slug>.png      the models' strips stacked

Resuming: a finished run (``bench.json`` present and recording the same request: model, requested
keywords, data, epochs, batch size, image size, seed, and the weights in the folder) is neither
retrained nor re-measured; an interrupted run continues from its last finished epoch
(``api.train(resume=True)``).

Measurements per run:
- quality: I-AUROC, P-AUROC, AUPRO (FPR ≤ 0.3), image F1-max from ``api.test``;
- training seconds per epoch: mean of ``run.json`` history (data loading and synthesis included);
- inference images/s at batch 1 and 16: ``model.predict`` (map + blur + score, no data loading)
  on random input at the run's image size, warm-up calls then the median of timed repeats
  (CUDA synchronised), torch's default thread count unless ``--threads`` is given;
- peak memory (MB): tensor memory of one ``predict`` at batch 16 = the model's parameters and
  buffers (teacher included) + the largest total of live tensors allocated during the call.
  CPU: counted by torch's profiler (``profile_memory``), CUDA: ``torch.cuda.max_memory_allocated``.
  It excludes the Python/torch runtime, allocator caches and library scratch space outside
  torch's allocator, so it is what the model needs, not the process's resident size.

Modules: ``schema`` (results.json format), ``measure`` (machine, throughput, memory), ``config``
(``BenchmarkConfig``), ``categories`` (data and categories), ``runner`` (one run, the loop),
``summary`` (aggregation, paper comparison), ``report`` (results.md), ``plots``, ``args`` (CLI).
"""

from __future__ import annotations

from .args import add_arguments, config_from_args, run_from_args
from .categories import discover_categories
from .config import DEFAULT_TEACHER, BenchmarkConfig
from .measure import (FULL_TIMING, MEMORY_METHOD, QUICK_TIMING, TIMING_METHOD, machine_info, measure_peak_memory,
                      measure_throughput)
from .plots import plot_results
from .report import render_markdown, write_markdown
from .runner import run_benchmark
from .schema import (DECISION_METRICS, MEASURES, METRICS, RANKING_METRICS, RESULTS_SCHEMA, SCHEMA_VERSION, SUMMARY_KEYS,
                     validate)
from .summary import compare_with_papers, load_paper_numbers, summarize

__all__ = [
    "RESULTS_SCHEMA", "METRICS", "RANKING_METRICS", "DECISION_METRICS",
    "MEASURES", "SUMMARY_KEYS", "SCHEMA_VERSION", "DEFAULT_TEACHER", "FULL_TIMING",
    "QUICK_TIMING", "MEMORY_METHOD", "TIMING_METHOD", "BenchmarkConfig", "add_arguments", "config_from_args",
    "run_from_args", "run_benchmark", "write_markdown", "render_markdown", "plot_results", "load_paper_numbers",
    "compare_with_papers", "summarize", "validate", "discover_categories", "machine_info", "measure_throughput",
    "measure_peak_memory",
]
