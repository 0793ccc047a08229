#!/bin/bash
# Exports a face student trained without the held-out people (flip-averaged and one-run int8,
# flip-averaged f32, thresholds calibrated on the door of 272) and measures each file (#15):
# pairs of the held-out LFW people, the door of 65 (LFW), the door of 272 (LFW + held-out
# CelebA, from bench/celeba_hold_out.sh), ORL + Yale; K = 1 and 2.
#
#   bench/held_out_face_eval.sh RUN TAG     # RUN: a `fewshot train distill` folder
#
# Writes runs/h-TAG/{flip-int8,one-int8,flip}.onnx and runs/h-TAG/eval-*.txt. Needs
# runs/face-val + runs/face-val-pairs.txt (`fewshot split`, `fewshot pairs`: README) and
# runs/hold/door-272. BIN picks the fewshot binary (default target/release/fewshot).
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=$1; TAG=$2; BIN=${BIN:-target/release/fewshot}
export FEWSHOT_DATA=${FEWSHOT_DATA:-../shared/data}
OUT=runs/h-$TAG
T=(--threshold-far 0.01 --threshold-data runs/hold/door-272 --gallery-far 0.01 --gallery-sizes 10,50,65,272)
mkdir -p "$OUT"
[ -f "$OUT/flip-int8.onnx" ] || "$BIN" export --model "$RUN/best.safetensors" --out "$OUT/flip-int8.onnx" --int8 --flip-average "${T[@]}"
[ -f "$OUT/one-int8.onnx" ] || "$BIN" export --model "$RUN/best.safetensors" --out "$OUT/one-int8.onnx" --int8 "${T[@]}"
[ -f "$OUT/flip.onnx" ] || "$BIN" export --model "$RUN/best.safetensors" --out "$OUT/flip.onnx" --flip-average "${T[@]}"
for f in flip-int8 one-int8 flip; do
  M=$OUT/$f.onnx
  {
  echo "== $M"; ls -l "$M"
  "$BIN" verify --model "$M" --images runs/face-val --pairs runs/face-val-pairs.txt
  for K in 1 2; do echo "== LFW K=$K"; "$BIN" door-eval --model "$M" --data runs/face-val --enroll-shots $K --roc "$OUT/roc-$f-lfw-k$K.png"; done
  for K in 1 2; do echo "== door-272 K=$K"; "$BIN" door-eval --model "$M" --data runs/hold/door-272 --enroll-shots $K --roc "$OUT/roc-$f-272-k$K.png"; done
  for K in 1 2; do echo "== ORL+Yale K=$K"; "$BIN" door-eval --model "$M" --data faces/orl --strangers faces/yale --enroll-shots $K --roc "$OUT/roc-$f-orl-k$K.png"; done
  } 2>&1 | grep -v '^\s*$' | tee "$OUT/eval-$f.txt"
done
