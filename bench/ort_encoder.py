#!/usr/bin/env python3
"""Encoder latency in onnxruntime, one image at a time on one thread: the
counterpart of `fewshot bench encoder` (same flags, same JSON keys).

    python3 bench/ort_encoder.py --model models/omniglot-protonet.onnx [--runs 300] [--json]

Needs `pip install onnxruntime numpy`.
"""
import argparse
import json
import os
import time

import numpy as np
import onnxruntime as ort


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="exported model (.onnx)")
    parser.add_argument("--runs", type=int, default=300, help="timed runs (median reported)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    session = ort.InferenceSession(args.model, options, providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    c, h, w = json.loads(meta["fewshot.input_shape"])
    x = np.random.default_rng(0).random((1, c, h, w), dtype=np.float32)
    name = session.get_inputs()[0].name
    for _ in range(10):
        session.run(None, {name: x})
    times = []
    for _ in range(max(args.runs, 1)):
        start = time.perf_counter()
        session.run(None, {name: x})
        times.append((time.perf_counter() - start) * 1e6)
    times.sort()
    median = times[len(times) // 2]
    size = os.path.getsize(args.model)
    if args.json:
        print(json.dumps({
            "bench": "encoder",
            "runtime": "onnxruntime " + ort.__version__,
            "model": args.model,
            "file_bytes": size,
            "runs": len(times),
            "median_us": median,
            "min_us": times[0],
        }))
    else:
        print(f"{args.model}: {size} bytes; onnxruntime, batch 1: median {median:.0f} µs "
              f"per image over {len(times)} runs (min {times[0]:.0f})")


if __name__ == "__main__":
    main()
