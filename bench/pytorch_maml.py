#!/usr/bin/env python3
"""One MAML meta-step of Conv-4 with an N-way head in PyTorch, the same algorithm
as `fewshot train maml` (functional forward, batch statistics in every forward,
inner SGD on the support cross-entropy, Adam on the mean query loss), timed and
with its peak memory, for comparison with `fewshot train maml --episodes N`'s
`ms_per_episode` and `/usr/bin/time -f %M`. Random 28×28 images: the cost does not
depend on their content.

    pip install torch
    python3 bench/pytorch_maml.py --order 2 --inner-steps 5 --meta-batch 32 --k-way 5 \
        --n-shot 1 --q-queries 1 --threads 1 --steps 3 --json
"""
import argparse
import json
import resource
import statistics
import time

import torch
import torch.nn.functional as F


def params(hidden, k_way, gen):
    ps = []
    cin = 1
    for _ in range(4):
        bound = 1.0 / (cin * 9) ** 0.5
        ps.append((torch.rand(hidden, cin, 3, 3, generator=gen) * 2 - 1) * bound)
        ps.append((torch.rand(hidden, generator=gen) * 2 - 1) * bound)
        ps.append(torch.ones(hidden))
        ps.append(torch.zeros(hidden))
        cin = hidden
    bound = 1.0 / hidden ** 0.5
    ps.append((torch.rand(k_way, hidden, generator=gen) * 2 - 1) * bound)
    ps.append((torch.rand(k_way, generator=gen) * 2 - 1) * bound)
    return [p.requires_grad_() for p in ps]


def forward(ps, x):
    for b in range(4):
        w, bias, gamma, beta = ps[4 * b : 4 * b + 4]
        x = F.conv2d(x, w, bias, padding=1)
        x = F.batch_norm(x, None, None, gamma, beta, training=True)
        x = F.max_pool2d(F.relu(x), 2)
    return F.linear(x.flatten(1), ps[16], ps[17])


def task_loss(ps, support, ys, query, yq, steps, lr, second_order):
    fast = ps
    for _ in range(steps):
        loss = F.cross_entropy(forward(fast, support), ys)
        grads = torch.autograd.grad(loss, fast, create_graph=second_order)
        fast = [p - lr * g for p, g in zip(fast, grads)]
    return F.cross_entropy(forward(fast, query), yq)


def main():
    a = argparse.ArgumentParser()
    a.add_argument("--order", type=int, default=2)
    a.add_argument("--inner-steps", type=int, default=5)
    a.add_argument("--inner-lr", type=float, default=0.4)
    a.add_argument("--meta-batch", type=int, default=32)
    a.add_argument("--k-way", type=int, default=5)
    a.add_argument("--n-shot", type=int, default=1)
    a.add_argument("--q-queries", type=int, default=1)
    a.add_argument("--hidden", type=int, default=64)
    a.add_argument("--threads", type=int, default=1)
    a.add_argument("--steps", type=int, default=3)
    a.add_argument("--json", action="store_true")
    args = a.parse_args()
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    ps = params(args.hidden, args.k_way, gen)
    opt = torch.optim.Adam(ps, lr=1e-3)
    ys = torch.arange(args.k_way).repeat_interleave(args.n_shot)
    yq = torch.arange(args.k_way).repeat_interleave(args.q_queries)
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        opt.zero_grad()
        for _ in range(args.meta_batch):
            support = torch.rand(args.k_way * args.n_shot, 1, 28, 28, generator=gen)
            query = torch.rand(args.k_way * args.q_queries, 1, 28, 28, generator=gen)
            loss = task_loss(ps, support, ys, query, yq, args.inner_steps, args.inner_lr, args.order == 2)
            (loss / args.meta_batch).backward()
        opt.step()
        times.append(time.perf_counter() - start)
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = {
        "order": args.order,
        "inner_steps": args.inner_steps,
        "meta_batch": args.meta_batch,
        "k_way": args.k_way,
        "n_shot": args.n_shot,
        "q_queries": args.q_queries,
        "threads": args.threads,
        "ms_per_meta_step_median": 1000 * statistics.median(times),
        "peak_rss_kb": peak_kb,
        "torch": torch.__version__,
    }
    print(json.dumps(result) if args.json else result)


if __name__ == "__main__":
    main()
