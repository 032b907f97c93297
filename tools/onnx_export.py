#!/usr/bin/env python3
"""onnx_export.py - a cnn.h model file (.cnn) as an ONNX graph, for inference.

    python3 tools/onnx_export.py model.cnn model.onnx           # input [N][H][W][C]
    python3 tools/onnx_export.py --nchw model.cnn model.onnx    # input [N][C][H][W]

Needs NumPy and the `onnx` package (Debian: python3-numpy python3-onnx; any onnx
from 1.12 on). The graph uses ONNX opset 13 (IR version 7), which every ONNX
Runtime since 1.7 runs; `onnx.checker` checks it before it is written.

THE GRAPH
  input "input": float32 [N][H][W][C] (channels last, as cnn.h and Keras hold
  images), or [N][C][H][W] with --nchw. The batch size N is free.
  output "output": float32 [N][units] for a model ending in a vector (Dense,
  Flatten, GlobalAveragePooling2D); an image output comes back in the input's
  layout.

  Inside, images travel as NCHW, ONNX's native layout: with NHWC input a single
  Transpose comes first. Flatten transposes back to NHWC before flattening, so
  the vector has Keras' (and cnn.h's) order and the Dense weights need no
  reordering. Conv2D kernels [kh][kw][c_in][filters] become [filters][c_in][kh][kw].

  Preprocessing: a model whose rescale is not 1 or that holds featurewise
  statistics (cnn_model_set_rescale, cnn_model_set_featurewise) gets them as the
  graph's first operations: Mul(rescale), then Sub(mean) and Div(std) per channel.
  The graph then takes the raw pixel values (0..255 as float32), as
  cnn_predict_images does for uint8 images; cnn_predict, which takes values
  already preprocessed, corresponds to --no-preprocess (those operations left out).

  Layers:
    Conv2D                  Conv (+ its activation); 'same' padding as explicit pads,
                            the odd pixel at the bottom/right as in Keras
    Dense                   Gemm (MatMul without bias) + activation
    BatchNormalization      BatchNormalization in inference mode (moving statistics)
    MaxPooling2D            MaxPool; AveragePooling2D: AveragePool with
                            count_include_pad=0 (padding cells are not counted, as
                            in cnn.h and Keras)
    GlobalAveragePooling2D  GlobalAveragePool + Flatten
    Flatten                 Transpose to NHWC + Flatten
    Dropout                 left out (identity in inference)
    Activation              Relu, Sigmoid, Tanh, Softmax (over the channels),
                            LeakyRelu(alpha), Elu(alpha)
    Add, Concatenate        Add (chained), Concat over the channels
    ZeroPadding2D           Pad (constant 0)
    UpSampling2D            Resize, nearest, 'asymmetric' coordinates, floor
  Names: every ONNX node and tensor takes the cnn.h layer's name.

Exit status 0 on success, 1 with a message on a file it cannot convert.
"""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cnn_format  # noqa: E402

OPSET = 13
IR_VERSION = 7


def export(model, nchw=False, preprocess=True):
    """An onnx.ModelProto of a cnn_format.Model."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits = [], []

    def const(name, array, dtype=np.float32):
        inits.append(numpy_helper.from_array(np.asarray(array, dtype), name))
        return name

    def node(op, ins, out, **attrs):
        nodes.append(helper.make_node(op, ins, [out], name=out, **attrs))
        return out

    inl = model.layers[model.input]
    h, w, c = inl.shape
    x = "input"
    # each layer's output: (tensor name, layout) with layout "nchw" (image) or "flat"
    out = {}
    if preprocess and (model.rescale != 1.0 or model.mean is not None):
        bshape = (c, 1, 1) if nchw else (c,)
        if model.rescale != 1.0:
            x = node("Mul", [x, const("rescale", np.float32(model.rescale))], "preprocess_rescale")
        if model.mean is not None:
            x = node("Sub", [x, const("featurewise_mean", np.reshape(model.mean, bshape))], "preprocess_center")
            x = node("Div", [x, const("featurewise_std", np.reshape(model.std, bshape))], "preprocess_scale")
    if not nchw:
        x = node("Transpose", [x], "input_nchw", perm=[0, 3, 1, 2])
    out[model.input] = (x, "nchw")

    flattened = {}  # layer -> its flat tensor, made once however many layers read it flat

    def flat(i):
        """layer i's output as [N][features] in NHWC order"""
        t, layout = out[i]
        if layout == "flat":
            return t
        if i not in flattened:
            L = model.layers[i]
            if L.h != 1 or L.w != 1:
                t = node("Transpose", [t], L.name + "_nhwc", perm=[0, 2, 3, 1])
            flattened[i] = node("Flatten", [t], L.name + "_flat", axis=1)
        return flattened[i]

    def activate(t, act, alpha, name):
        act = cnn_format.ACTIVATIONS[act]
        if act == "linear":
            return t
        op = {"relu": "Relu", "sigmoid": "Sigmoid", "tanh": "Tanh", "softmax": "Softmax",
              "leaky_relu": "LeakyRelu", "elu": "Elu"}[act]
        attrs = {"axis": 1} if op == "Softmax" else {"alpha": float(alpha)} if op in ("LeakyRelu", "Elu") else {}
        return node(op, [t], name, **attrs)

    def pads(L, x):
        if L.padding != cnn_format.SAME:
            return [0, 0, 0, 0]
        th = max((L.h - 1) * L.sh + L.kh - x.h, 0)
        tw = max((L.w - 1) * L.sw + L.kw - x.w, 0)
        return [th // 2, tw // 2, th - th // 2, tw - tw // 2]

    for i, L in enumerate(model.layers):
        if i == model.input:
            continue
        if L.kind == "InputLayer":
            raise cnn_format.FormatError("a second InputLayer %r" % L.name)
        ins = [model.layers[j] for j in L.inputs]
        src = [out[j] for j in L.inputs]
        T = model.tensors(i)
        name = L.name
        k = L.kind
        if k == "Conv2D":
            if src[0][1] != "nchw":
                raise cnn_format.FormatError("Conv2D %r: its input is flat" % name)
            args = [src[0][0], const(name + "_kernel", np.transpose(T["kernel"], (3, 2, 0, 1)))]
            if "bias" in T:
                args.append(const(name + "_bias", T["bias"]))
            t = node("Conv", args, name + ("_conv" if L.activation else ""), kernel_shape=[L.kh, L.kw],
                     strides=[L.sh, L.sw], pads=pads(L, ins[0]))
            out[i] = (activate(t, L.activation, L.alpha, name), "nchw")
        elif k == "Dense":
            a = flat(L.inputs[0])
            kern = const(name + "_kernel", T["kernel"])
            pre = name + ("_linear" if L.activation else "")
            t = node("Gemm", [a, kern, const(name + "_bias", T["bias"])], pre) if "bias" in T else \
                node("MatMul", [a, kern], pre)
            out[i] = (activate(t, L.activation, L.alpha, name), "flat")
        elif k == "BatchNormalization":
            args = [src[0][0]] + [const(name + "_" + p, T[p]) for p in
                                  ("gamma", "beta", "moving_mean", "moving_variance")]
            out[i] = (node("BatchNormalization", args, name, epsilon=float(L.epsilon)), src[0][1])
        elif k in ("MaxPooling2D", "AveragePooling2D"):
            attrs = dict(kernel_shape=[L.kh, L.kw], strides=[L.sh, L.sw], pads=pads(L, ins[0]))
            if k == "AveragePooling2D":
                attrs["count_include_pad"] = 0
            out[i] = (node("MaxPool" if k == "MaxPooling2D" else "AveragePool", [src[0][0]], name, **attrs), "nchw")
        elif k == "GlobalAveragePooling2D":
            t = node("GlobalAveragePool", [src[0][0]], name + "_pool")
            out[i] = (node("Flatten", [t], name, axis=1), "flat")
        elif k == "Flatten":
            out[i] = (flat(L.inputs[0]), "flat")
        elif k == "Dropout":
            out[i] = src[0]
        elif k == "Activation":
            t = activate(src[0][0], L.activation, L.alpha, name)
            if t == src[0][0]:
                t = node("Identity", [t], name)
            out[i] = (t, src[0][1])
        elif k in ("Add", "Concatenate"):
            layouts = {s[1] for s in src}
            if len(layouts) > 1:  # an image of 1x1 beside a vector: both as vectors
                src = [(flat(j), "flat") for j in L.inputs]
            if k == "Concatenate":
                out[i] = (node("Concat", [s[0] for s in src], name, axis=1), src[0][1])
            else:
                t = src[0][0]
                for n_, s in enumerate(src[1:]):
                    t = node("Add", [t, s[0]], name if n_ == len(src) - 2 else "%s_%d" % (name, n_))
                out[i] = (t, src[0][1])
        elif k == "ZeroPadding2D":
            top, bottom, left, right = cnn_format.zero_padding(model, L)
            p = const(name + "_pads", [0, 0, top, left, 0, 0, bottom, right], np.int64)
            out[i] = (node("Pad", [src[0][0], p], name, mode="constant"), "nchw")
        elif k == "UpSampling2D":
            roi = const(name + "_roi", np.zeros(0, np.float32))
            scales = const(name + "_scales", [1, 1, L.kh, L.kw])
            out[i] = (node("Resize", [src[0][0], roi, scales], name, mode="nearest",
                           coordinate_transformation_mode="asymmetric", nearest_mode="floor"), "nchw")
        else:
            raise cnn_format.FormatError("layer %r: kind %s has no ONNX form here" % (name, k))

    y, layout = out[model.output]
    O = model.layers[model.output]
    if layout == "nchw" and not nchw:
        y = node("Transpose", [y], "output_nhwc", perm=[0, 2, 3, 1])
    nodes.append(helper.make_node("Identity", [y], ["output"], name="output"))
    if layout == "flat":
        oshape = ["N", O.c]
    else:
        oshape = ["N", O.c, O.h, O.w] if nchw else ["N", O.h, O.w, O.c]
    ishape = ["N", c, h, w] if nchw else ["N", h, w, c]
    graph = helper.make_graph(nodes, "cnn_h_model", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ishape)],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, oshape)], inits)
    proto = helper.make_model(graph, producer_name="cnn.h tools/onnx_export.py",
                              opset_imports=[helper.make_opsetid("", OPSET)])
    proto.ir_version = IR_VERSION
    if model.class_names:
        helper.set_model_props(proto, {"class_names": "\n".join(model.class_names)})
    onnx.checker.check_model(proto)
    return proto


def main(argv=None):
    ap = argparse.ArgumentParser(description="Write a cnn.h model file (.cnn) as an ONNX graph.")
    ap.add_argument("model", help="the .cnn file")
    ap.add_argument("out", help="the .onnx file to write")
    ap.add_argument("--nchw", action="store_true", help="the graph takes [N][C][H][W] input (default [N][H][W][C])")
    ap.add_argument("--no-preprocess", action="store_true",
                    help="leave the model's rescale and featurewise mean/std out of the graph")
    a = ap.parse_args(argv)
    try:
        import onnx
    except ImportError:
        print("onnx_export.py: the Python package 'onnx' is missing (Debian: apt-get install python3-onnx; "
              "or pip install onnx)", file=sys.stderr)
        return 1
    try:
        model = cnn_format.load(a.model)
        proto = export(model, nchw=a.nchw, preprocess=not a.no_preprocess)
    except (OSError, cnn_format.FormatError) as e:
        print("onnx_export.py: %s: %s" % (a.model, e), file=sys.stderr)
        return 1
    except onnx.checker.ValidationError as e:  # a graph this exporter should not have made: say so
        print("onnx_export.py: %s: the ONNX graph made from it is not valid (a bug of this exporter; please "
              "report it): %s" % (a.model, e), file=sys.stderr)
        return 1
    onnx.save(proto, a.out)
    print("onnx_export.py: wrote %s (%d nodes, opset %d, input %s)" %
          (a.out, len(proto.graph.node), OPSET, "NCHW" if a.nchw else "NHWC"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
