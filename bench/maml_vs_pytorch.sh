#!/bin/bash
# MAML meta-step time and peak memory, `fewshot train maml` against PyTorch running the
# same algorithm (bench/pytorch_maml.py), back to back, one thread, 5 inner steps, 1-shot,
# 1 query per class. Ours: time per meta-step = (wall of N+1 meta-steps − wall of one) / N;
# peak RSS of the longer run. Needs a release build and PyTorch:
#   cargo build --release -p fewshot-host && PYTHON=path/to/python-with-torch bench/maml_vs_pytorch.sh
set -e
cd "$(dirname "$0")/.."
F=${FEWSHOT:-target/release/fewshot}
PY=${PYTHON:-python3}
DATA=${DATA:-omniglot/images_background_small1}
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
# k_way meta_batch N, comma-separated (CONFIGS="5 32 3" runs one)
IFS=, read -r -a configs <<<"${CONFIGS:-5 4 6,5 32 3,20 32 2}"
for cfg in "${configs[@]}"; do
  set -- $cfg; K=$1; MB=$2; N=$3
  for order in 2 1; do
    t() {
      rm -rf "$OUT/run"
      /usr/bin/time -f "%e %M" "$F" train maml --data "$DATA" --out "$OUT/run" --order $order \
        --inner-steps 5 --meta-batch $MB --k-way $K --n-shot 1 --q-queries 1 --episodes "$1" \
        --val-episodes 0 --threads 1 2>&1 >/dev/null | tail -1
    }
    a=$(t 1); b=$(t $((N + 1)))
    python3 -c "a='$a'.split(); b='$b'.split(); print('fewshot order $order, $K-way, meta-batch $MB: %.2f s per meta-step, peak %.0f MB' % ((float(b[0]) - float(a[0])) / $N, float(b[1]) / 1024))"
    "$PY" bench/pytorch_maml.py --order $order --inner-steps 5 --meta-batch $MB --k-way $K \
      --n-shot 1 --q-queries 1 --threads 1 --steps $N --json | tail -1
  done
done
