"""onnx_check.py MODEL.onnx X.npy Y.npy TOL [--nchw] - ONNX Runtime against cnn_predict.

Runs MODEL.onnx in ONNX Runtime on the inputs X.npy ([n][h][w][c]; transposed to
[n][c][h][w] for --nchw) and compares the outputs with Y.npy (what cnn.h's
tests/tools_check predicted); prints the largest absolute difference and exits 1
when it is above TOL. Run by tests/test_onnx.sh with the interpreter of
~/.cache/cnn-h/onnx-venv (onnxruntime, numpy).
"""
import sys

import numpy as np
import onnxruntime as ort

path, xp, yp, tol = sys.argv[1:5]
nchw = "--nchw" in sys.argv[5:]
x = np.load(xp).astype(np.float32)
if nchw:
    x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
expected = np.load(yp)
opts = ort.SessionOptions()
opts.intra_op_num_threads = 1
sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
got = sess.run(["output"], {"input": x})[0]
if got.shape != expected.shape:
    print("FAIL %s: ONNX Runtime gives shape %s, cnn_predict %s" % (path, got.shape, expected.shape))
    sys.exit(1)
d = float(np.max(np.abs(got.astype(np.float64) - expected)))
print("max abs difference %.3g over %s outputs (onnxruntime %s, tolerance %s)" % (d, got.shape, ort.__version__, tol))
sys.exit(0 if d <= float(tol) else 1)
