#!/usr/bin/env bash
# Latency of one checkpoint's f32 export and its three int8 forms, batch 1, one thread:
# tract as it finds the CPU, tract with AVX2 taken away (TRACT_CPU_ISA=-avx2), and
# onnxruntime. tract times the four files in turns (`fewshot bench encoder` with several
# --model: the median of 15 rounds' medians), so that the machine's drift falls on all alike;
# onnxruntime's cell is two runs of RUNS images ("first / second").
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
for form in "${forms[@]}"; do files+=(--model "$out/$name-$form.onnx"); done
medians() { $py -c 'import json,sys; print(" ".join("%.0f" % r["median_us"] for r in json.load(sys.stdin)))'; }
read -r -a tract <<<"$($fewshot bench encoder "${files[@]}" --runs "$runs" --json | medians)"
read -r -a down <<<"$(TRACT_CPU_ISA=$isa_down $fewshot bench encoder "${files[@]}" --runs "$runs" --json | medians)"
ort() { $py bench/ort_encoder.py --model "$1" --runs 300 --json | $py -c 'import json,sys; print("%.0f" % json.load(sys.stdin)["median_us"])'; }
echo "| $name | bytes | tract | tract, TRACT_CPU_ISA=$isa_down | onnxruntime |"
echo "| --- | --- | --- | --- | --- |"
for i in "${!forms[@]}"; do
  m="$out/$name-${forms[$i]}.onnx"
  printf '| %s | %s | %s µs | %s µs | %s / %s µs |\n' "${forms[$i]}" "$(stat -c %s "$m")" \
    "${tract[$i]}" "${down[$i]}" "$(ort "$m")" "$(ort "$m")"
done
