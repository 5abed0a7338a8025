#!/bin/sh
# The main job on the embedded default: train the tiny supernet on Fashion-MNIST, build its
# torch-cpu latency table, run the family search and print the Pareto set. Every stage
# resumes or reuses what an earlier run finished. OUT=DIR picks the folder (default runs/demo).
set -eu
BIN=${BIN:-.venv/bin}
OUT=${OUT:-runs/demo}
RESUME=""
if [ -f "$OUT/supernet/checkpoint.pt" ]; then RESUME="--resume"; fi
"$BIN/nas" train-supernet --recipe fashion-mnist-tiny --out "$OUT/supernet" $RESUME
"$BIN/nas" build-lut --space efficientformerv2-tiny --backend torch-cpu --out "$OUT/tiny-torch-cpu.parquet"
"$BIN/nas" search --supernet "$OUT/supernet" --lut "$OUT/tiny-torch-cpu.parquet" --family --out "$OUT/search"
"$BIN/nas" results show "$OUT/search"
