#!/usr/bin/env bash
# Exports one checkpoint as f32 and its three int8 forms into runs/bench-forms/ and times
# them with bench/latency_table.sh (tract as found, tract with ISA_DOWN taken away,
# onnxruntime; RUNS runs per round, default 100).
#
#   bench/int8_forms.sh CHECKPOINT CALIBRATION NAME [RUNS]
#   bench/int8_forms.sh models/omniglot-protonet-small1.safetensors omniglot/images_background_small1 omniglot
#
# On an AVX-512 VNNI machine, ISA_DOWN=-avx512vnni,-avx512f,-avxvnni shows what an AVX2-only
# CPU gets. Needs a release build (cargo build --release) and onnxruntime for Python
# (FEWSHOT_PYTHON, else target/ort-venv/bin/python as ./test.sh makes it).
set -euo pipefail
ckpt=$1 calib=$2 name=$3 runs=${4:-100}
isa_down=${ISA_DOWN:--avx2}
fewshot=${FEWSHOT_BIN:-target/release/fewshot}
py=${FEWSHOT_PYTHON:-target/ort-venv/bin/python}
out=runs/bench-forms
forms=(f32 weight-only conv-integer qlinear)
mkdir -p "$out"
$fewshot export --model "$ckpt" --out "$out/$name-f32.onnx" >/dev/null
for form in weight-only conv-integer qlinear; do
  extra=()
  [ "$form" != weight-only ] && extra=(--calibration "$calib")
  $fewshot export --model "$ckpt" --out "$out/$name-$form.onnx" --int8 --int8-form "$form" "${extra[@]}" >/dev/null
done
files=()
for form in "${forms[@]}"; do files+=("$out/$name-$form.onnx"); done
RUNS=$runs ISA_DOWN=$isa_down FEWSHOT_BIN=$fewshot FEWSHOT_PYTHON=$py "$(dirname "$0")/latency_table.sh" "${files[@]}"
