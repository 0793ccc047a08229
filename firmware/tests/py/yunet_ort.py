#!/usr/bin/env python3
"""Second-runtime reference for the face detector: onnxruntime runs a YuNet
model on a raw little-endian f32 input (1x3xHxW, B G R, 0-255) and numpy
decodes its outputs independently of the Rust core; prints JSON with the raw
outputs (by name) and the faces (box, score, landmarks, in frame pixels:
input pixels divided by SCALE). With VOTE_IOU, each kept face's landmarks
are the score-weighted mean of those of every candidate overlapping it by at
least VOTE_IOU. Used by firmware/tests/detect.rs.

    python3 yunet_ort.py MODEL.onnx INPUT.f32 W H SCALE SCORE_THRESHOLD NMS_IOU [VOTE_IOU]
"""
import json
import sys

import numpy as np
import onnxruntime as ort


def iou(a, b):
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    iw = max(0.0, min(ax + aw, bx + bw) - max(ax, bx))
    ih = max(0.0, min(ay + ah, by + bh) - max(ay, by))
    inter = iw * ih
    union = aw * ah + bw * bh - inter
    return inter / union if union > 0 else 0.0


def main():
    model, raw = sys.argv[1], sys.argv[2]
    w, h = int(sys.argv[3]), int(sys.argv[4])
    scale, threshold, nms_iou = (float(v) for v in sys.argv[5:8])
    vote = float(sys.argv[8]) if len(sys.argv) > 8 else None
    x = np.fromfile(raw, dtype="<f4").reshape(1, 3, h, w)
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    outs = dict(zip(names, session.run(None, {session.get_inputs()[0].name: x})))
    faces = []
    for stride in (8, 16, 32):
        cols = w // stride
        cls = np.clip(outs[f"cls_{stride}"].reshape(-1), 0, 1).astype(np.float64)
        obj = np.clip(outs[f"obj_{stride}"].reshape(-1), 0, 1).astype(np.float64)
        box = outs[f"bbox_{stride}"].reshape(-1, 4).astype(np.float64)
        kps = outs[f"kps_{stride}"].reshape(-1, 10).astype(np.float64)
        score = np.sqrt(cls * obj)
        for i in np.nonzero(score >= threshold)[0]:
            r, c = divmod(int(i), cols)
            cx, cy = (c + box[i, 0]) * stride, (r + box[i, 1]) * stride
            bw, bh = np.exp(box[i, 2]) * stride, np.exp(box[i, 3]) * stride
            marks = [[(kps[i, 2 * n] + c) * stride / scale, (kps[i, 2 * n + 1] + r) * stride / scale]
                     for n in range(5)]
            faces.append({
                "score": float(score[i]),
                "box": [(cx - bw / 2) / scale, (cy - bh / 2) / scale, bw / scale, bh / scale],
                "landmarks": marks,
            })
    faces.sort(key=lambda f: -f["score"])
    kept = []
    for f in faces:
        if all(iou(k["box"], f["box"]) <= nms_iou for k in kept):
            kept.append(f)
    if vote is not None:
        for k in kept:
            near = [f for f in faces if iou(k["box"], f["box"]) >= vote]
            weights = np.array([f["score"] for f in near])
            marks = np.array([f["landmarks"] for f in near])
            k["landmarks"] = (np.tensordot(weights, marks, axes=1) / weights.sum()).tolist()
    print(json.dumps({
        "outputs": {k: v.reshape(-1).astype(float).tolist() for k, v in outs.items()},
        "faces": kept,
    }))


if __name__ == "__main__":
    main()
