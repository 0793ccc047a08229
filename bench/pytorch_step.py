#!/usr/bin/env python3
"""One Prototypical Networks training step of Conv-4 in PyTorch, timed the same
way as `fewshot bench train-step`, with the same flags and the same JSON.

    pip install torch
    python3 bench/pytorch_step.py --k-way 60 --n-shot 5 --q-queries 5 --size 28 --channels 1 --threads 2 --json
"""
import argparse
import json
import resource
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


def block(cin, cout):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(), nn.MaxPool2d(2))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--k-way", type=int, default=60)
    p.add_argument("--n-shot", type=int, default=5)
    p.add_argument("--q-queries", type=int, default=5)
    p.add_argument("--size", type=int, default=28)
    p.add_argument("--channels", type=int, default=1)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps", type=int, default=7)
    p.add_argument("--json", action="store_true")
    p.add_argument("--channels-last", action="store_true",
                   help="NHWC memory layout (torch.channels_last) instead of NCHW")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    enc = nn.Sequential(block(a.channels, a.hidden), block(a.hidden, a.hidden), block(a.hidden, a.hidden),
                        block(a.hidden, a.hidden), nn.Flatten())
    fmt = torch.channels_last if a.channels_last else torch.contiguous_format
    enc = enc.to(memory_format=fmt)
    opt = torch.optim.Adam(enc.parameters(), lr=1e-3)
    k, n, q = a.k_way, a.n_shot, a.q_queries
    support = torch.rand(k * n, a.channels, a.size, a.size).contiguous(memory_format=fmt)
    query = torch.rand(k * q, a.channels, a.size, a.size).contiguous(memory_format=fmt)
    labels = torch.arange(k).repeat_interleave(q)
    times = []
    for i in range(a.warmup + max(a.steps, 1)):
        start = time.perf_counter()
        emb = enc(torch.cat([support, query]).contiguous(memory_format=fmt))
        protos = emb[: k * n].reshape(k, n, -1).mean(1)
        logits = -torch.cdist(emb[k * n:], protos).pow(2)
        loss = F.cross_entropy(logits, labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i >= a.warmup:
            times.append((time.perf_counter() - start) * 1000.0)
    times.sort()
    median = times[len(times) // 2]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    out = {
        "bench": "train-step", "framework": f"pytorch {torch.__version__}",
        "k_way": k, "n_shot": n, "q_queries": q, "size": a.size, "channels": a.channels, "hidden": a.hidden,
        "threads": torch.get_num_threads(), "steps": len(times),
        "layout": "nhwc" if a.channels_last else "nchw",
        "median_ms": median, "min_ms": times[0], "max_ms": times[-1], "peak_rss_mb": peak,
    }
    if a.json:
        print(json.dumps(out))
    else:
        print(f"train step, {k}-way {n}-shot {q}-query, {a.channels}x{a.size}x{a.size}, {a.hidden} channels, "
              f"{out['threads']} threads: median {median:.1f} ms over {len(times)} steps; peak RSS {peak:.0f} MB")


if __name__ == "__main__":
    main()
