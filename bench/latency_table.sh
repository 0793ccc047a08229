#!/usr/bin/env bash
# Latency of exported encoders, batch 1, one thread, as a Markdown table: tract as it finds
# the CPU, tract with instruction sets taken away (TRACT_CPU_ISA=$ISA_DOWN), and onnxruntime.
# tract times all files in turns (`fewshot bench encoder` with several --model: the median of
# 15 rounds' medians), so that the machine's drift falls on all alike; onnxruntime's cell is
# two runs of 300 images ("first / second").
#
#   bench/latency_table.sh MODEL.onnx [MODEL.onnx ...]
#   RUNS=20 ISA_DOWN=-avx512vnni,-avx512f,-avxvnni bench/latency_table.sh models/*.onnx
#
# RUNS: runs per round (default 100). ISA_DOWN: default -avx2 (an AVX-only CPU's kernels);
# on an AVX-512 VNNI machine -avx512vnni,-avx512f,-avxvnni shows what an AVX2-only CPU gets.
# Needs a release build and onnxruntime for Python (FEWSHOT_PYTHON, else
# target/ort-venv/bin/python as ./test.sh makes it).
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: $0 MODEL.onnx [MODEL.onnx ...]" >&2; exit 2; }
runs=${RUNS:-100}
isa_down=${ISA_DOWN:--avx2}
fewshot=${FEWSHOT_BIN:-target/release/fewshot}
py=${FEWSHOT_PYTHON:-target/ort-venv/bin/python}
files=()
for m in "$@"; do files+=(--model "$m"); done
# One --model prints one JSON object, several an array.
medians() { $py -c 'import json,sys; d=json.load(sys.stdin); print(" ".join("%.0f" % r["median_us"] for r in (d if isinstance(d, list) else [d])))'; }
read -r -a tract <<<"$($fewshot bench encoder "${files[@]}" --runs "$runs" --json | medians)"
read -r -a down <<<"$(TRACT_CPU_ISA=$isa_down $fewshot bench encoder "${files[@]}" --runs "$runs" --json | medians)"
ort() { $py "$(dirname "$0")/ort_encoder.py" --model "$1" --runs 300 --json | $py -c 'import json,sys; print("%.0f" % json.load(sys.stdin)["median_us"])'; }
echo "| file | bytes | tract | tract, TRACT_CPU_ISA=$isa_down | onnxruntime |"
echo "| --- | --- | --- | --- | --- |"
i=0
for m in "$@"; do
  printf '| `%s` | %s | %s µs | %s µs | %s / %s µs |\n' "$(basename "$m")" "$(stat -c %s "$m")" \
    "${tract[$i]}" "${down[$i]}" "$(ort "$m")" "$(ort "$m")"
  i=$((i + 1))
done
