#!/usr/bin/env python3
"""Two models on the same items of Lake's one-shot runs, paired.

Reads two `fewshot eval-runs --json` outputs (each run's `wrong` items) and
prints each model's errors, the items only one of them gets wrong, and the
exact two-sided McNemar p-value over those: whether two error rates on the
same 200 items differ by more than chance.

    fewshot eval-runs --model A --json > a.json
    fewshot eval-runs --model B --json > b.json
    python3 bench/lake_paired.py a.json b.json
"""
import json
import math
import sys


def wrong_items(path):
    with open(path) as f:
        report = json.load(f)
    runs = (report["runs_folder"], [(r["run"], r["items"]) for r in report["runs"]])
    return report["model"], {(r["run"], w) for r in report["runs"] for w in r["wrong"]}, runs


def mcnemar_exact(b, c):
    """Two-sided exact McNemar: twice the smaller binomial(b + c, 1/2) tail."""
    n = b + c
    if n == 0:
        return 1.0
    return min(1.0, 2 * sum(math.comb(n, i) for i in range(min(b, c) + 1)) / 2 ** n)


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    (name_a, a, runs_a), (name_b, b, runs_b) = (wrong_items(p) for p in sys.argv[1:])
    if runs_a != runs_b:
        sys.exit(f"the two reports are of different runs ({runs_a[0]} and {runs_b[0]}, or their items differ)")
    items = sum(n for _, n in runs_a[1])
    print(f"{name_a}: {len(a)} of {items} wrong")
    print(f"{name_b}: {len(b)} of {items} wrong")
    only_a, only_b = len(a - b), len(b - a)
    print(f"both wrong {len(a & b)}; only the first {only_a}; only the second {only_b}; "
          f"McNemar exact two-sided p = {mcnemar_exact(only_a, only_b):.3f}")


if __name__ == "__main__":
    main()
