#!/usr/bin/env python3
"""Second-runtime check of an exported model: `onnx.checker` must accept it and
onnxruntime runs it on a raw little-endian f32 input, printing the output as
JSON. Used by tests/tests/export.rs; needs `pip install onnx onnxruntime numpy`.

    python3 tests/onnx_check.py MODEL.onnx INPUT.f32 C H W
"""
import json
import sys

import numpy as np
import onnx
import onnxruntime as ort


def main():
    model_path, input_path = sys.argv[1], sys.argv[2]
    c, h, w = (int(v) for v in sys.argv[3:6])
    model = onnx.load(model_path)
    onnx.checker.check_model(model, full_check=True)
    x = np.fromfile(input_path, dtype="<f4").reshape(-1, c, h, w)
    session = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {session.get_inputs()[0].name: x})
    meta = {p.key: p.value for p in model.metadata_props}
    print(json.dumps({"output": out.astype(float).tolist(), "metadata_keys": sorted(meta)}))


if __name__ == "__main__":
    main()
