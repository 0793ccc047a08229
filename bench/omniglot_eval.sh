#!/bin/bash
# bench/omniglot_eval.sh MODEL OUTDIR: an Omniglot model's figures as the cards give them.
# Lake's runs 01-10 (OUTDIR/runs.json: each run's wrong items, for bench/lake_paired.py),
# then 1 000 episodes of 5 queries on the test alphabets (images_background_small2 less the
# model's training classes): 5/20-way 1/5-shot, and 20-way 1-shot within one alphabet.
# BIN: the fewshot binary (default target/release/fewshot).
set -euo pipefail
M=$1
O=$2
B=${BIN:-target/release/fewshot}
export FEWSHOT_DATA=${FEWSHOT_DATA:-../shared/data}
mkdir -p "$O"
"$B" eval-runs --model "$M" --json > "$O/runs.json"
python3 -c '
import json, sys
r = json.load(open(sys.argv[1]))
rate, errors, items = 100 * r["error_rate"], r["errors"], r["items"]
lo, hi = (100 * x for x in r["error_rate_ci95"])
print(f"Lake runs 01-10: {rate:.2f}% error ({errors} of {items}; 95% interval {lo:.1f}-{hi:.1f}%, Wilson)")
' "$O/runs.json" > "$O/runs.txt"
for shape in "5 1 0" "5 5 0" "20 1 0" "20 5 0" "20 1 1"; do
    read -r k n within <<< "$shape"
    echo -n "$k-way $n-shot, within one alphabet $within: "
    "$B" eval --model "$M" --data omniglot/images_background_small2 --k-way "$k" --n-shot "$n" \
        --q-queries 5 --episodes 1000 --within-alphabet "$within" 2>/dev/null | tail -1
done > "$O/episodes.txt"
cat "$O/runs.txt" "$O/episodes.txt"
