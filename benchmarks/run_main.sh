#!/usr/bin/env bash
# The main comparison committed in benchmarks/results/main/ (issues 2, 4, 5, 6).
# Budget: efficientnet_lite0 teacher (genuine ImageNet weights), 10 epochs, each method's paper
# batch size, MVTec AD bottle at 256 px, Magnetic Tile at 128 px (the DSKD paper's setting),
# last-epoch model, thresholds from validation good images. One torch thread per process.
# The invocations below were run in parallel (one per category and pass) into the same --out;
# the last one trains nothing and aggregates. Rerunning any line skips finished runs.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DISTILLAD_DATA:-../shared/data}
OUT=benchmarks/runs/main
B="distillad benchmark --data $DATA --epochs 10 --out $OUT --threads 1 --no-plots"
$B --categories mvtec_ad/bottle --image-size 256 --models rd,rd_var,stfpm,dskd --seeds 1
$B --categories magnetic_tile   --image-size 128 --models rd,rd_var,stfpm --seeds 1
$B --categories mvtec_ad/bottle --image-size 256 --models rd,rd_var --seeds 3
$B --categories magnetic_tile   --image-size 128 --models rd,rd_var --seeds 3
$B --categories magnetic_tile   --image-size 128 --models dskd --seeds 1
# (second session) DSKD seeds 1 and 2, the two categories in parallel:
$B --categories mvtec_ad/bottle --image-size 256 --models dskd --seeds 3
$B --categories magnetic_tile   --image-size 128 --models dskd --seeds 3
# Training above shared the 2 cores between up to 4 processes, so its s/epoch are inflated.
# Inference speed and memory were then re-measured alone on the quiet machine, 2 threads
# (deleting bench.json re-measures a finished run without retraining it):
find $OUT -name bench.json -delete
B2="distillad benchmark --data $DATA --epochs 10 --out $OUT --threads 2 --no-plots"
$B2 --categories mvtec_ad/bottle --image-size 256 --models rd,rd_var --seeds 3
$B2 --categories mvtec_ad/bottle --image-size 256 --models stfpm --seeds 1
$B2 --categories mvtec_ad/bottle --image-size 256 --models dskd --seeds 3
$B2 --categories magnetic_tile   --image-size 128 --models rd,rd_var --seeds 3
$B2 --categories magnetic_tile   --image-size 128 --models stfpm --seeds 1
$B2 --categories magnetic_tile   --image-size 128 --models dskd --seeds 3
# aggregate everything finished (3 seeds where run, 1 otherwise), tables and plots:
distillad benchmark --data "$DATA" --epochs 10 --out $OUT --threads 2 --report-only --models rd,rd_var,stfpm,dskd --seeds 3 \
    --categories mvtec_ad/bottle,magnetic_tile --image-size 256 --image-size-for magnetic_tile=128
mkdir -p benchmarks/results/main
cp $OUT/results.md $OUT/results.json benchmarks/results/main/
rm -rf benchmarks/results/main/plots && cp -r $OUT/plots benchmarks/results/main/
# the stacked strips (over 2 MB each) repeat the per-model ones, which are committed:
rm -f benchmarks/results/main/plots/overlays_{magnetic_tile,mvtec_ad_bottle}.png
# paired comparisons over seeds (read results.json, train nothing):
.venv/bin/python benchmarks/paired.py benchmarks/results/main/results.json rd rd_var --title "RD vs RD + variance loss" \
    --note "$(sed -n '/^Verdict/,$p' benchmarks/results/rd_var_main.md)" > benchmarks/results/rd_var_main.md.new
mv benchmarks/results/rd_var_main.md.new benchmarks/results/rd_var_main.md
.venv/bin/python benchmarks/bench_dskd.py --part main   # → benchmarks/results/dskd_main.md
