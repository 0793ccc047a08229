#!/usr/bin/env python3
"""Second-runtime check of an exported graph with named 2-d inputs: `onnx.checker`
must accept it and onnxruntime runs it, printing its first output as JSON. Used
by tests/tests/matching.rs; needs `pip install onnx onnxruntime numpy`.

    python3 tests/onnx_run.py MODEL.onnx NAME=FILE.f32:ROWS:COLS ...
"""
import json
import sys

import numpy as np
import onnx
import onnxruntime as ort


def main():
    model_path = sys.argv[1]
    onnx.checker.check_model(onnx.load(model_path), full_check=True)
    feeds = {}
    for arg in sys.argv[2:]:
        name, spec = arg.split("=", 1)
        path, rows, cols = spec.rsplit(":", 2)
        feeds[name] = np.fromfile(path, dtype="<f4").reshape(int(rows), int(cols))
    session = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    out = session.run(None, feeds)[0]
    print(json.dumps({"output": out.astype(float).tolist()}))


if __name__ == "__main__":
    main()
