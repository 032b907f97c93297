#!/usr/bin/env python3
"""keras_import.py - a Keras model file as a cnn.h model file (.cnn).

    /usr/bin/python3 tools/keras_import.py model.h5 model.cnn      # Keras 2 / tf.keras HDF5
    /usr/bin/python3 tools/keras_import.py model.keras model.cnn   # Keras 3 zip

Needs NumPy and h5py (Debian: python3-numpy python3-h5py); no TensorFlow, no Keras.
Reads
  - the Keras 2 HDF5 format (tf.keras / tf_keras model.save("x.h5"), and Keras 3's
    legacy .h5): the "model_config" JSON attribute, the "model_weights" groups, the
    "training_config" attribute and the "optimizer_weights" group;
  - the Keras 3 ".keras" zip: config.json (with its compile_config) and
    model.weights.h5 ("layers/<key>/vars/<i>", "optimizer/vars/<i>").
Writes the architecture, the weights, the BatchNormalization moving statistics,
and, when the file has them, the compile settings and the optimizer's state.

ARCHITECTURE. A Functional or Sequential model with one image input (or one
vector input, read as 1x1xC) and one output, of the layers cnn.h has:
  InputLayer, Conv2D, Dense, BatchNormalization, MaxPooling2D, AveragePooling2D,
  GlobalAveragePooling2D, Flatten, Dropout, Activation, Add, Concatenate,
  ZeroPadding2D, UpSampling2D (nearest);
  ReLU (plain, or with negative_slope: leaky), LeakyReLU, ELU and Softmax (last
  axis) become an Activation; SpatialDropout2D a Dropout (the same in inference);
  a Rescaling layer reading the input becomes the model's rescale (and, with an
  offset or per-channel factors, its featurewise mean/std: (x - mean) / std =
  x * scale + offset), which cnn.h applies to uint8 images (cnn_predict_images,
  datasets); a ZeroPadding2D of all zeros is left out.
  Activations: linear, relu, sigmoid, tanh, softmax, elu, leaky_relu (Keras 3's
  string: slope 0.2). Layer names are kept (cnn.h takes up to 63 bytes).
Anything else stops the conversion with a message naming the layer and the
option, and exit status 1: another layer class, a shared layer (called twice), a
nested model, channels_first, Conv2D dilation_rate or groups, padding 'causal',
UpSampling2D bilinear, BatchNormalization over another axis or with renorm,
Concatenate over another axis, an activation cnn.h lacks, a Dense on an image
(Keras applies it per pixel; cnn.h wants a Flatten first). Options that change
training but not inference (bias or activity regularizers, constraints, noise
shapes, BatchNormalization without center or scale, where cnn.h trains gamma and
beta anyway) are taken with a warning on stderr.

COMPILE SETTINGS AND OPTIMIZER STATE. The loss (categorical_crossentropy,
sparse_categorical_crossentropy, binary_crossentropy, mse), the accuracy metric
and the optimizer: Adam (learning_rate, beta_1, beta_2, epsilon), SGD
(learning_rate, momentum, nesterov) or RMSprop (learning_rate, rho, momentum,
epsilon), with clipnorm, clipvalue or global_clipnorm. The optimizer's slots, when
the file holds them (model.save after training, include_optimizer left on), go
into the .cnn file's slots with the step count (the optimizer's "iterations"), so
that cnn_fit goes on where Keras stopped: Adam m -> slot 1, v -> slot 2; SGD's
momentum -> slot 1; RMSprop's velocity -> slot 2, momentum -> slot 1. They are
matched to the weights by name in the HDF5 format, and by position in the .keras
format (Keras 3 orders them by model.trainable_variables). Frozen layers' slots
stay 0. A learning-rate schedule, weight decay, EMA, amsgrad, centered RMSprop,
another optimizer, a loss from logits or with label smoothing, or slots that do
not match the weights: the model is written without compile settings (cnn_compile
it in C), with a warning. Note: Keras 3's RMSprop divides by sqrt(v + epsilon),
cnn.h's by sqrt(v) + epsilon.

Exit status 0 on success, 1 with a message for a file it cannot convert.
"""
import io
import json
import os
import re
import sys
import zipfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cnn_format as F  # noqa: E402


class ImportError_(Exception):
    """a model this tool does not convert: the message says why"""


def warn(msg):
    print("keras_import.py: warning: " + msg, file=sys.stderr)


# ---- reading the file ------------------------------------------------------------

class Source:
    """config: the model's config dict ({"class_name", "config"}); compile: dict or
    None (loss, metrics, optimizer {class_name, config}); weights(layer) -> list of
    (name, array) in Keras' order; opt_vars: None, or ("named", {name: array}) or
    ("positional", [arrays])"""


def _attr(v):
    return v.decode("utf-8") if isinstance(v, bytes) else v


def _h5_names(group):
    names = group.attrs.get("weight_names", [])
    return [_attr(n) for n in names]


def read_h5(path, h5py):
    f = h5py.File(path, "r")
    s = Source()
    if "model_config" not in f.attrs:
        raise ImportError_("%s holds no model_config: a weights-only file (save_weights) has no architecture; "
                           "save the whole model (model.save)" % path)
    s.config = json.loads(_attr(f.attrs["model_config"]))
    tc = json.loads(_attr(f.attrs["training_config"])) if "training_config" in f.attrs else None
    s.compile = None
    if tc:
        s.compile = {"loss": tc.get("loss"), "metrics": tc.get("metrics"),
                     "optimizer": tc.get("optimizer_config")}
    mw = f["model_weights"] if "model_weights" in f else f

    def weights(name, cls=None):
        if name not in mw:
            return []
        g = mw[name]
        out = []
        for n in _h5_names(g):
            short = n.split("/")[-1].split(":")[0]
            out.append((short, np.array(g[n], np.float32)))
        return out

    s.weights = weights
    s.opt_vars = None
    if "optimizer_weights" in f:
        g = f["optimizer_weights"]
        s.opt_vars = ("named", {n: np.array(g[n]) for n in _h5_names(g)})
    s.close = f.close
    return s


def _snake(name):
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()


def read_keras(path, h5py):
    z = zipfile.ZipFile(path)
    names = z.namelist()
    if "config.json" not in names or "model.weights.h5" not in names:
        raise ImportError_("%s is a zip without config.json and model.weights.h5: not a Keras 3 .keras file" % path)
    s = Source()
    s.config = json.loads(z.read("config.json"))
    cc = s.config.get("compile_config")
    s.compile = None
    if cc:
        s.compile = {"loss": cc.get("loss"), "metrics": cc.get("metrics"), "optimizer": cc.get("optimizer")}
    f = h5py.File(io.BytesIO(z.read("model.weights.h5")), "r")
    layers = f["layers"] if "layers" in f else None
    by_name = {}
    if layers is not None:
        for key in layers:
            v = layers[key].get("vars")
            if v is not None and "name" in v.attrs:
                by_name[_attr(v.attrs["name"])] = key
    # without the name attribute (older Keras 3): the keys Keras gives the layers in order
    order, counts = {}, {}
    for L in s.config.get("config", {}).get("layers", []):
        base = _snake(L["class_name"])
        k = counts.get(base, 0)
        counts[base] = k + 1
        order[L["config"]["name"]] = base if k == 0 else "%s_%d" % (base, k)

    def weights(name, cls=None):
        if layers is None:
            return []
        key = by_name.get(name) or order.get(name)
        if key is None or key not in layers or "vars" not in layers[key]:
            return []
        v = layers[key]["vars"]
        return [(None, np.array(v[str(i)], np.float32)) for i in range(len(v))]

    s.weights = weights
    s.opt_vars = None
    if "optimizer" in f and "vars" in f["optimizer"]:
        v = f["optimizer"]["vars"]
        s.opt_vars = ("positional", [np.array(v[str(i)]) for i in range(len(v))])
    s.close = f.close
    return s


# ---- the graph -------------------------------------------------------------------

def _history(obj, out):
    """keras_history entries [layer, node, tensor] inside a Keras 3 inbound node's args"""
    if isinstance(obj, dict):
        if obj.get("class_name") == "__keras_tensor__":
            out.append(obj["config"]["keras_history"])
        else:
            for v in obj.values():
                _history(v, out)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            _history(v, out)
    return out


def inbound(layer):
    """names of the layers a layer reads"""
    nodes = layer.get("inbound_nodes", [])
    name = layer["config"]["name"]
    if len(nodes) > 1:
        raise ImportError_("layer '%s' (%s) is called %d times: cnn.h has no shared layers" %
                           (name, layer["class_name"], len(nodes)))
    if not nodes:
        return []
    node = nodes[0]
    refs = _history(node, []) if isinstance(node, dict) else [r for r in node]
    out = []
    for r in refs:
        if r[1] != 0 or (len(r) > 2 and r[2] != 0):
            raise ImportError_("layer '%s' reads output %s of '%s': cnn.h has no shared layers or multiple outputs"
                               % (name, r[1:3], r[0]))
        out.append(r[0])
    return out


def _endpoints(v):
    """input_layers / output_layers: ["a", 0, 0] or [["a", 0, 0], ...] -> names"""
    if v and isinstance(v[0], str):
        return [v[0]]
    return [e[0] for e in v]


def graph(config):
    """[(class_name, name, config, [input names])] in topological order, and the
    input and output names"""
    cls = config.get("class_name")
    cfg = config.get("config", {})
    layers = cfg.get("layers") if isinstance(cfg, dict) else cfg
    if cls == "Sequential":
        out, prev = [], None
        for L in layers:
            c = L["config"]
            if L["class_name"] != "InputLayer" and prev is None:  # Keras 2: the shape on the first layer
                shape = c.get("batch_input_shape") or c.get("batch_shape")
                if not shape:
                    raise ImportError_("the Sequential model has no input shape")
                out.append(("InputLayer", "input", {"batch_input_shape": shape, "name": "input"}, []))
                prev = "input"
            out.append((L["class_name"], c["name"], c, [prev] if prev else []))
            prev = c["name"]
        if not out:
            raise ImportError_("the Sequential model has no layers")
        return out, out[0][1], out[-1][1]
    if cls not in ("Functional", "Model"):
        raise ImportError_("a model of class %s: this tool reads Functional and Sequential models" % cls)
    ins, outs = _endpoints(cfg["input_layers"]), _endpoints(cfg["output_layers"])
    if len(ins) != 1 or len(outs) != 1:
        raise ImportError_("the model has %d inputs and %d outputs: cnn.h models have one of each" %
                           (len(ins), len(outs)))
    items = [(L["class_name"], L["config"]["name"], L["config"], inbound(L)) for L in layers]
    # topological order, keeping Keras' order where it already is one
    done, order, pending = set(), [], list(items)
    while pending:
        for k, it in enumerate(pending):
            if all(i in done for i in it[3]):
                order.append(it)
                done.add(it[1])
                del pending[k]
                break
        else:
            raise ImportError_("the layer graph has a cycle or reads an unknown layer (%s)" % pending[0][1])
    return order, ins[0], outs[0]


# ---- layers ----------------------------------------------------------------------

ACT = {"linear": "linear", None: "linear", "relu": "relu", "sigmoid": "sigmoid", "tanh": "tanh",
       "softmax": "softmax", "elu": "elu", "leaky_relu": "leaky_relu"}


def activation(name, cfg, key="activation"):
    a = cfg.get(key, "linear")
    if isinstance(a, dict):  # a serialized function or object
        a = a.get("config", a.get("class_name")) if not isinstance(a.get("config"), dict) else a.get("class_name")
    if a not in ACT:
        raise ImportError_("layer '%s': activation %r: cnn.h has linear, relu, sigmoid, tanh, softmax, elu, "
                           "leaky_relu" % (name, a))
    a = ACT[a]
    alpha = 0.2 if a == "leaky_relu" else 0.0  # Keras 3's leaky_relu string: negative_slope 0.2
    return F.ACTIVATIONS.index(a), alpha


def pair(v, name, what):
    if isinstance(v, int):
        return v, v
    if isinstance(v, (list, tuple)) and len(v) == 2 and all(isinstance(x, int) for x in v):
        return v[0], v[1]
    raise ImportError_("layer '%s': %s %r is not two integers" % (name, what, v))


def check_last_axis(name, cls, cfg):
    if cfg.get("data_format", "channels_last") not in ("channels_last", None):
        raise ImportError_("layer '%s' (%s): data_format %s: cnn.h holds images channels_last (NHWC); "
                           "rebuild the model with channels_last" % (name, cls, cfg["data_format"]))


def padding(name, cfg):
    p = cfg.get("padding", "valid")
    if p not in ("valid", "same"):
        raise ImportError_("layer '%s': padding %r: cnn.h has 'valid' and 'same'" % (name, p))
    return F.SAME if p == "same" else F.VALID


def training_only(name, cfg, keys):
    for k in keys:
        if cfg.get(k) not in (None, False, {}):
            warn("layer '%s': %s is not taken (it changes training only, not predictions)" % (name, k))


def kernel_options(name, cfg, kw):
    """What Conv2D and Dense share: activation, bias, kernel regularizer, and the
    training-only options that do not change a prediction."""
    kw["activation"], kw["alpha"] = activation(name, cfg)
    kw["use_bias"] = 1 if cfg.get("use_bias", True) else 0
    kw["l1"], kw["l2"] = regularizer(name, cfg)
    training_only(name, cfg, ["bias_regularizer", "activity_regularizer", "kernel_constraint", "bias_constraint"])


def regularizer(name, cfg):
    r = cfg.get("kernel_regularizer")
    if not r:
        return 0.0, 0.0
    c = r.get("config", {})
    cls = r.get("class_name", "")
    if cls not in ("L1L2", "L1", "L2", "l1_l2", "l1", "l2"):
        warn("layer '%s': kernel_regularizer %s is not taken" % (name, cls))
        return 0.0, 0.0
    return float(c.get("l1", 0.0) or 0.0), float(c.get("l2", 0.0) or 0.0)


def convert_layers(src, items, in_name, out_name):
    model = None
    alias = {}  # Keras layer name -> the cnn layer that stands for its output
    pending_weights = []  # (cnn index, keras class, keras name, cfg)
    consumers = {}
    for cls, name, cfg, ins in items:
        for i in ins:
            consumers.setdefault(i, []).append(name)
    pre = None
    rank = {}  # each cnn layer's Keras tensor rank: 4 (an image) or 2 (a vector)
    for cls, name, cfg, ins in items:
        ins = [alias.get(i, i) for i in ins]
        if cls == "InputLayer":
            if name != in_name or model is not None:
                raise ImportError_("InputLayer '%s' is not the model's input" % name)
            shape = cfg.get("batch_input_shape") or cfg.get("batch_shape") or cfg.get("shape")
            shape = list(shape[1:]) if shape and len(shape) in (2, 4) and shape[0] is None else list(shape or [])
            if len(shape) == 1:
                shape = [1, 1] + shape
            if len(shape) != 3 or any(not isinstance(d, int) or d <= 0 for d in shape):
                raise ImportError_("InputLayer '%s': shape %s: cnn.h takes a fixed image shape (h, w, c) or a "
                                   "vector (n,)" % (name, cfg.get("batch_input_shape") or cfg.get("batch_shape")))
            model = F.new_model(*shape, name=name)
            rank[name] = 4 if shape[:2] != [1, 1] or len(cfg.get("batch_input_shape") or cfg.get("batch_shape")
                                                              or [0, 0, 0, 0]) == 4 else 2
            continue
        if model is None:
            raise ImportError_("layer '%s' comes before the InputLayer" % name)
        if cls in ("Functional", "Sequential", "Model"):
            raise ImportError_("layer '%s' is a nested model (%s): flatten it into one model first" % (name, cls))
        kw = {"trainable": 1 if cfg.get("trainable", True) else 0}
        x = model.layers[model.index(ins[0])] if ins else None
        kind = None
        if cls == "Rescaling":
            if ins != [in_name] or pre is not None or consumers.get(in_name, []) != [name]:
                raise ImportError_("layer '%s' (Rescaling): cnn.h takes one Rescaling, right after the input and "
                                   "its only reader (the model's rescale)" % name)
            scale = np.asarray(cfg.get("scale", 1.0), np.float64).ravel()
            offset = np.asarray(cfg.get("offset", 0.0), np.float64).ravel()
            c = model.layers[0].c
            if scale.size not in (1, c) or offset.size not in (1, c) or np.any(scale == 0):
                raise ImportError_("layer '%s' (Rescaling): scale %s and offset %s must be a number or one per "
                                   "channel, scale not 0" % (name, cfg.get("scale"), cfg.get("offset")))
            if scale.size == 1 and not np.any(offset):
                model.rescale = float(scale[0])
            elif scale.size == 1:  # x * s + o = (x * s - (-o)) / 1
                model.rescale = float(scale[0])
                model.mean = np.broadcast_to(-offset, (c,)).astype(np.float32)
                model.std = np.ones(c, np.float32)
            else:  # x * s_c + o_c = (x - (-o_c / s_c)) / (1 / s_c)
                s_, o_ = np.broadcast_to(scale, (c,)), np.broadcast_to(offset, (c,))
                model.mean = (-o_ / s_).astype(np.float32)
                model.std = (1.0 / s_).astype(np.float32)
            pre = name
            alias[name] = in_name
            continue
        if cls == "Conv2D":
            check_last_axis(name, cls, cfg)
            if pair(cfg.get("dilation_rate", 1), name, "dilation_rate") != (1, 1):
                raise ImportError_("layer '%s' (Conv2D): dilation_rate %s: cnn.h's Conv2D has no dilation" %
                                   (name, cfg["dilation_rate"]))
            if cfg.get("groups", 1) != 1:
                raise ImportError_("layer '%s' (Conv2D): groups %s: cnn.h's Conv2D has no groups" %
                                   (name, cfg["groups"]))
            kind = "Conv2D"
            kw["units"] = cfg["filters"]
            kw["kh"], kw["kw"] = pair(cfg["kernel_size"], name, "kernel_size")
            kw["sh"], kw["sw"] = pair(cfg.get("strides", 1), name, "strides")
            kw["padding"] = padding(name, cfg)
            kernel_options(name, cfg, kw)
        elif cls == "Dense":
            kind = "Dense"
            if x.h != 1 or x.w != 1:
                raise ImportError_("layer '%s' (Dense) reads '%s', an image of %dx%dx%d: Keras applies Dense to "
                                   "each pixel, cnn.h's Dense wants a Flatten or GlobalAveragePooling2D before it"
                                   % (name, x.name, x.h, x.w, x.c))
            kw["units"] = cfg["units"]
            kernel_options(name, cfg, kw)
        elif cls == "BatchNormalization":
            axis = cfg.get("axis", -1)
            axis = axis[0] if isinstance(axis, list) and len(axis) == 1 else axis
            if axis not in (-1, rank[x.name] - 1):
                raise ImportError_("layer '%s' (BatchNormalization): axis %s: cnn.h normalizes the last axis "
                                   "(channels)" % (name, cfg.get("axis")))
            if cfg.get("renorm"):
                raise ImportError_("layer '%s' (BatchNormalization): renorm: cnn.h has no batch renormalization"
                                   % name)
            kind = "BatchNormalization"
            kw["momentum"] = float(cfg.get("momentum", 0.99))
            kw["epsilon"] = float(cfg.get("epsilon", 1e-3))
            if kw["momentum"] == 0.0:
                warn("layer '%s': momentum 0 reads as cnn.h's default 0.99 (training only)" % name)
            if not cfg.get("center", True) or not cfg.get("scale", True):
                warn("layer '%s': center=%s scale=%s: cnn.h keeps beta 0 / gamma 1 but trains them" %
                     (name, cfg.get("center", True), cfg.get("scale", True)))
            training_only(name, cfg, ["beta_regularizer", "gamma_regularizer", "beta_constraint",
                                      "gamma_constraint"])
        elif cls in ("MaxPooling2D", "AveragePooling2D"):
            check_last_axis(name, cls, cfg)
            kind = cls
            kw["kh"], kw["kw"] = pair(cfg.get("pool_size", 2), name, "pool_size")
            st = cfg.get("strides")
            kw["sh"], kw["sw"] = pair(st, name, "strides") if st is not None else (kw["kh"], kw["kw"])
            kw["padding"] = padding(name, cfg)
        elif cls == "GlobalAveragePooling2D":
            check_last_axis(name, cls, cfg)
            kind = cls
        elif cls == "Flatten":
            check_last_axis(name, cls, cfg)
            kind = cls
        elif cls in ("Dropout", "SpatialDropout2D"):
            kind = "Dropout"
            kw["rate"] = float(cfg.get("rate", 0.0))
            if cls != "Dropout":
                warn("layer '%s': %s becomes a Dropout (the same in inference; it drops single values, not "
                     "channels, in training)" % (name, cls))
            training_only(name, cfg, ["noise_shape"])
        elif cls in ("Activation", "ReLU", "LeakyReLU", "ELU", "Softmax"):
            kind = "Activation"
            if cls == "Activation":
                kw["activation"], kw["alpha"] = activation(name, cfg)
            elif cls == "ReLU":
                if cfg.get("max_value") is not None or float(cfg.get("threshold", 0.0) or 0.0) != 0.0:
                    raise ImportError_("layer '%s' (ReLU): max_value %s, threshold %s: cnn.h's relu has neither" %
                                       (name, cfg.get("max_value"), cfg.get("threshold")))
                slope = float(cfg.get("negative_slope", 0.0) or 0.0)
                kw["activation"] = F.ACTIVATIONS.index("leaky_relu" if slope else "relu")
                kw["alpha"] = slope
            elif cls == "LeakyReLU":
                kw["activation"] = F.ACTIVATIONS.index("leaky_relu")
                kw["alpha"] = float(cfg.get("negative_slope", cfg.get("alpha", 0.3)))
            elif cls == "ELU":
                kw["activation"] = F.ACTIVATIONS.index("elu")
                kw["alpha"] = float(cfg.get("alpha", 1.0))
            else:
                axis = cfg.get("axis", -1)
                if axis not in (-1, [-1], rank[x.name] - 1):
                    raise ImportError_("layer '%s' (Softmax): axis %s: cnn.h's softmax is over the channels" %
                                       (name, axis))
                kw["activation"] = F.ACTIVATIONS.index("softmax")
            if kw["activation"] in (F.ACTIVATIONS.index("leaky_relu"), F.ACTIVATIONS.index("elu")) and \
                    not kw["alpha"] > 0:
                raise ImportError_("layer '%s' (%s): alpha %s: cnn.h takes a slope > 0" % (name, cls, kw["alpha"]))
        elif cls in ("Add", "Concatenate"):
            kind = cls
            if len(ins) < 2:
                raise ImportError_("layer '%s' (%s) has %d input" % (name, cls, len(ins)))
            if cls == "Concatenate":
                axis = cfg.get("axis", -1)
                if axis not in (-1, rank[x.name] - 1):
                    raise ImportError_("layer '%s' (Concatenate): axis %s: cnn.h concatenates channels (the last "
                                       "axis)" % (name, axis))
        elif cls == "ZeroPadding2D":
            check_last_axis(name, cls, cfg)
            p = cfg.get("padding", 1)
            if isinstance(p, int):
                p = ((p, p), (p, p))
            p = [pair(v, name, "padding") if not isinstance(v, int) else (v, v) for v in p]
            top, bottom, left, right = p[0][0], p[0][1], p[1][0], p[1][1]
            if min(top, bottom, left, right) < 0:
                raise ImportError_("layer '%s' (ZeroPadding2D): negative padding" % name)
            if top == bottom == left == right == 0:  # nothing to do: cnn.h would read 0 as its default 1
                alias[name] = ins[0]
                continue
            kind = cls
            kw["pad"] = (top, bottom, left, right)
        elif cls == "UpSampling2D":
            check_last_axis(name, cls, cfg)
            if cfg.get("interpolation", "nearest") != "nearest":
                raise ImportError_("layer '%s' (UpSampling2D): interpolation %r: cnn.h's UpSampling2D is "
                                   "'nearest'" % (name, cfg["interpolation"]))
            kind = cls
            kw["kh"], kw["kw"] = pair(cfg.get("size", 2), name, "size")
        else:
            raise ImportError_("layer '%s' is a %s: cnn.h has no such layer (it takes InputLayer, Conv2D, Dense, "
                               "BatchNormalization, MaxPooling2D, AveragePooling2D, GlobalAveragePooling2D, "
                               "Flatten, Dropout, Activation, ReLU, LeakyReLU, ELU, Softmax, Add, Concatenate, "
                               "ZeroPadding2D, UpSampling2D, and Rescaling at the input)" % (name, cls))
        if kind not in ("Add", "Concatenate") and len(ins) != 1:
            raise ImportError_("layer '%s' (%s) has %d inputs" % (name, cls, len(ins)))
        try:
            idx = F.add(model, kind, name, ins, **kw)
        except F.FormatError as e:
            raise ImportError_("layer '%s' (%s): %s" % (name, cls, e))
        rank[name] = 2 if kind in ("Dense", "Flatten") or (kind == "GlobalAveragePooling2D" and
                                                            not cfg.get("keepdims")) else rank[ins[0]]
        if kind in ("Conv2D", "Dense", "BatchNormalization"):
            pending_weights.append((idx, cls, name, cfg))
    if model is None:
        raise ImportError_("the model has no InputLayer")
    model.output = model.index(alias.get(out_name, out_name))
    if model.output == model.input:
        raise ImportError_("the model's output is its input")
    return model, pending_weights


def keras_tensors(cls, cfg, arrays):
    """a layer's weights, as [(cnn tensor name, array)] in Keras' order"""
    if cls in ("Conv2D", "Dense"):
        names = ["kernel"] + (["bias"] if cfg.get("use_bias", True) else [])
    else:
        names = (["gamma"] if cfg.get("scale", True) else []) + (["beta"] if cfg.get("center", True) else []) + \
                ["moving_mean", "moving_variance"]
    if len(arrays) != len(names):
        raise ImportError_("layer '%s' (%s): the file holds %d weight arrays, the layer has %d (%s)" %
                           (cfg["name"], cls, len(arrays), len(names), ", ".join(names)))
    out = []
    for want, (got, a) in zip(names, arrays):
        if got is not None and got != want:
            raise ImportError_("layer '%s': weight %r where %r was expected" % (cfg["name"], got, want))
        out.append((want, a))
    return out


def load_weights(src, model, pending):
    for idx, cls, name, cfg in pending:
        for t, a in keras_tensors(cls, cfg, src.weights(name, cls)):
            try:
                model.set_tensor(idx, t, a)
            except F.FormatError as e:
                raise ImportError_(str(e))


# ---- compile settings and optimizer slots ----------------------------------------

LOSSES = {"categorical_crossentropy": "categorical_crossentropy", "CategoricalCrossentropy": "categorical_crossentropy",
          "sparse_categorical_crossentropy": "sparse_categorical_crossentropy",
          "SparseCategoricalCrossentropy": "sparse_categorical_crossentropy",
          "binary_crossentropy": "binary_crossentropy", "BinaryCrossentropy": "binary_crossentropy",
          "mse": "mse", "mean_squared_error": "mse", "MeanSquaredError": "mse"}


def _has_accuracy(m):
    if isinstance(m, str):
        return "acc" in m
    if isinstance(m, dict):
        return _has_accuracy(m.get("config", {}).get("name", "")) or _has_accuracy(m.get("class_name", "").lower())
    if isinstance(m, (list, tuple)):
        return any(_has_accuracy(v) for v in m)
    return False


def compile_settings(src):
    """the .cnn compile dict, or None (with a warning saying why)"""
    c = src.compile
    if not c or not c.get("optimizer"):
        return None
    loss = c.get("loss")
    if isinstance(loss, dict):
        lc = loss.get("config", {}) or {}
        if lc.get("from_logits") or lc.get("label_smoothing"):
            warn("loss %s with from_logits/label_smoothing: not taken; the model is written without compile "
                 "settings" % loss.get("class_name"))
            return None
        loss = loss.get("class_name")
    if isinstance(loss, (list, dict)) or loss not in LOSSES:
        warn("loss %r: not one of cnn.h's (categorical_crossentropy, sparse_categorical_crossentropy, "
             "binary_crossentropy, mse); the model is written without compile settings" % (loss,))
        return None
    o = c["optimizer"]
    cls = o.get("class_name", "").split(">")[-1].lower()
    oc = o.get("config", {})
    if cls not in ("adam", "sgd", "rmsprop"):
        warn("optimizer %s: cnn.h has Adam, SGD and RMSprop; the model is written without compile settings" %
             o.get("class_name"))
        return None
    lr = oc.get("learning_rate", oc.get("lr"))
    problems = []
    if not isinstance(lr, (int, float)):
        problems.append("a learning-rate schedule")
    if oc.get("weight_decay"):
        problems.append("weight_decay")
    if oc.get("use_ema"):
        problems.append("use_ema")
    if oc.get("amsgrad"):
        problems.append("amsgrad")
    if oc.get("centered"):
        problems.append("centered")
    if oc.get("gradient_accumulation_steps"):
        problems.append("gradient_accumulation_steps")
    if problems:
        warn("optimizer %s with %s: cnn.h's lacks it; the model is written without compile settings" %
             (o.get("class_name"), ", ".join(problems)))
        return None
    cfg = {"loss": LOSSES[loss], "metrics": F.ACCURACY if _has_accuracy(c.get("metrics")) else 0,
           "optimizer": cls, "learning_rate": float(lr), "beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7,
           "momentum": 0.0, "rho": 0.9, "nesterov": 0, "step": 0}
    for k in ("beta_1", "beta_2", "epsilon", "momentum", "rho"):
        if oc.get(k) is not None:
            cfg[k] = float(oc[k])
    cfg["nesterov"] = 1 if oc.get("nesterov") else 0
    if cls == "adam":
        cfg["momentum"] = 0.0
    for k in ("clipnorm", "clipvalue", "global_clipnorm"):
        cfg[k] = float(oc.get(k) or 0.0)
    if sum(cfg[k] > 0 for k in ("clipnorm", "clipvalue", "global_clipnorm")) > 1:
        warn("more than one of clipnorm, clipvalue, global_clipnorm: only clipnorm is kept")
        cfg["clipvalue"] = cfg["global_clipnorm"] = 0.0
    return cfg


SLOT_NAMES = {"adam": ({"m", "momentum"}, {"v", "velocity"}), "sgd": ({"m", "momentum"}, set()),
              "rmsprop": ({"momentum"}, {"velocity", "rms"})}


def optimizer_slots(src, model, items, cfg):
    """(slot1, slot2, step) from the file's optimizer variables, or None"""
    if src.opt_vars is None:
        return None
    kind, vars_ = src.opt_vars
    s1, s2 = np.zeros_like(model.params), np.zeros_like(model.params)
    # the trainable tensors in Keras' order: (cnn layer index, cnn tensor name, keras layer, weight name)
    trainable = []
    keras_cls = {name: cls for cls, name, c, ins in items}
    for li, t, state, off, shape in model.tensor_layout():
        L = model.layers[li]
        if not state and L.trainable:
            trainable.append((li, t, L.name, off, int(np.prod(shape)), shape))
    # Keras' order of trainable variables is the layers' order in the config
    korder = {name: k for k, (cls, name, c, ins) in enumerate(items)}
    trainable.sort(key=lambda e: (korder.get(e[2], 0), ["kernel", "bias", "gamma", "beta"].index(e[1])))
    step = None
    slot1, slot2 = SLOT_NAMES[cfg["optimizer"]]

    def put(slot, e, a):
        a = np.asarray(a, np.float32)
        if a.size != e[4]:
            raise ImportError_("optimizer slot of %s/%s has %d values, the weight %d" % (e[2], e[1], a.size, e[4]))
        slot[e[3]:e[3] + e[4]] = a.ravel()

    if kind == "named" and all(n.split(":")[0].split("/")[-1] in ("iteration", "iter", "iterations", "learning_rate")
                               for n in vars_) or kind == "positional" and len(vars_) <= 2:
        return None  # an optimizer that never stepped: no slots yet
    try:
        if kind == "named":
            found = 0
            for n, a in vars_.items():
                short = n.split(":")[0]
                parts = short.split("/")
                if parts[-1] in ("iteration", "iter", "iterations"):
                    step = int(a)
                    continue
                for e in trainable:
                    for slot, names in ((s1, slot1), (s2, slot2)):
                        for sn in names:
                            # tf.keras 2.11+: Opt/<slot>/<layer>/<w>; legacy: Opt/<layer>/<w>/<slot>;
                            # Keras 3's .h5: opt/<layer>_<w>_<slot>
                            if (len(parts) >= 4 and parts[1] == sn and parts[-2:] == [e[2], e[1]]) or \
                                    (len(parts) >= 4 and parts[-1] == sn and parts[-3:-1] == [e[2], e[1]]) or \
                                    parts[-1] == "%s_%s_%s" % (e[2], e[1], sn):
                                put(slot, e, a)
                                found += 1
            want = len(trainable) * (bool(slot1) + bool(slot2))
            if cfg["optimizer"] == "sgd" and cfg["momentum"] == 0:
                want = 0
            if cfg["optimizer"] == "rmsprop" and cfg["momentum"] == 0:
                want = len(trainable)
            if found != want:
                raise ImportError_("%d optimizer slots matched the weights by name, %d expected" % (found, want))
        else:
            arrays = list(vars_)
            if len(arrays) < 2:
                raise ImportError_("the optimizer holds %d variables" % len(arrays))
            step = int(arrays[0])
            rest = arrays[2:]  # iterations, learning_rate, then the slots
            n = len(trainable)
            if cfg["optimizer"] == "adam":
                plan = [(s1, rest[2 * k], trainable[k]) for k in range(min(n, len(rest) // 2))] + \
                       [(s2, rest[2 * k + 1], trainable[k]) for k in range(min(n, len(rest) // 2))]
                want = 2 * n
            elif cfg["optimizer"] == "sgd":
                want = n if cfg["momentum"] else 0
                plan = [(s1, rest[k], trainable[k]) for k in range(min(n, len(rest)))] if want else []
            else:
                want = n * (2 if cfg["momentum"] else 1)
                plan = [(s2, rest[k], trainable[k]) for k in range(min(n, len(rest)))]
                if cfg["momentum"]:
                    plan += [(s1, rest[n + k], trainable[k]) for k in range(min(n, len(rest) - n))]
            if len(rest) != want:
                raise ImportError_("the optimizer holds %d slot arrays, %d trainable weights want %d" %
                                   (len(rest), n, want))
            for slot, a, e in plan:
                if tuple(np.shape(a)) != tuple(e[5]):
                    raise ImportError_("optimizer slot of shape %s where weight %s/%s has %s" %
                                       (np.shape(a), e[2], e[1], e[5]))
                put(slot, e, a)
    except ImportError_ as e:
        warn("optimizer state not taken (%s): the model starts a fresh optimizer" % e)
        return None
    return s1, s2, step or 0


# ---- main ------------------------------------------------------------------------

def convert(path):
    """a cnn_format.Model from a Keras file"""
    try:
        import h5py
    except ImportError:
        raise ImportError_("the Python package h5py is missing (Debian: apt-get install python3-h5py)")
    if zipfile.is_zipfile(path):
        src = read_keras(path, h5py)
    else:
        try:
            src = read_h5(path, h5py)
        except OSError as e:
            raise ImportError_("%s is neither a Keras 3 .keras zip nor an HDF5 file (%s)" % (path, e))
    try:
        items, in_name, out_name = graph(src.config)
        model, pending = convert_layers(src, items, in_name, out_name)
        load_weights(src, model, pending)
        cfg = compile_settings(src)
        if cfg is not None:
            model.compiled = cfg
            slots = optimizer_slots(src, model, items, cfg)
            if slots is not None:
                model.slots = slots[:2]
                cfg["step"] = slots[2]
    finally:
        src.close()
    return model


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2 or argv[0].startswith("-"):
        print("usage: keras_import.py IN.h5|IN.keras OUT.cnn", file=sys.stderr)
        return 2
    try:
        model = convert(argv[0])
        data = F.dumps(model)
    except (ImportError_, F.FormatError, OSError, KeyError, ValueError, TypeError) as e:
        msg = str(e) if isinstance(e, (ImportError_, F.FormatError, OSError)) else "%s: %s" % (type(e).__name__, e)
        print("keras_import.py: %s: %s" % (argv[0], msg), file=sys.stderr)
        return 1
    with open(argv[1], "wb") as f:
        f.write(data)
    cfg = model.compiled
    print("keras_import.py: wrote %s: %d layers, %d parameters%s%s" %
          (argv[1], len(model.layers), len(model.params),
           ", %s (step %d%s)" % (cfg["optimizer"], cfg["step"], ", with its slots" if model.slots else "")
           if cfg else ", no compile settings",
           ", rescale %g" % model.rescale if model.rescale != 1 else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
