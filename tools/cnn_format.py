"""cnn_format.py - cnn.h's model file (.cnn) in pure Python + NumPy: read and write.

    import cnn_format
    m = cnn_format.load("model.cnn")          # a cnn_format.Model
    for layer in m.layers:
        print(layer.kind, layer.name, layer.shape, {k: v.shape for k, v in m.tensors(layer).items()})
    cnn_format.save(m, "copy.cnn")

The format is the one described under "MODEL FILE FORMAT" at the top of cnn.h
(cnn__serialize / cnn__deserialize), versions 1 and 2, little-endian:

    "CNNMODEL", u32 version, u64 payload length, payload, u32 CRC-32 of the payload
    payload:
      u32 layer count, u32 input layer, u32 output layer
      per layer: u32 type (its place in CNN__LAYER_KINDS), str name, u32 input count,
                 u32 input layer each, the record: 12 u32 (h w c units kh kw sh sw
                 padding activation use_bias trainable) and 6 f32 (alpha l1 l2 rate
                 momentum epsilon)
      u64 seed, f32 rescale, u32 featurewise channels C, [C f32 mean, C f32 std]
      u32 class name count, str each
      u32 compiled; if compiled: u32 loss, u32 metrics, u32 optimizer type,
          6 f32 (learning_rate beta_1 beta_2 epsilon momentum rho), u32 nesterov,
          version 2 only: 3 f32 (clipnorm clipvalue global_clipnorm), u64 step
      u64 n_params, the parameters (f32); u64 n_state, the state (f32)
      u32 has slots; if so slot1 (f32 x n_params), slot2 (f32 x n_params)
    str = u32 length + bytes (no terminator).

The parameters are every layer's tensors, layer after layer, in the order each
layer kind's tensor() function names them (cnn.h, "Layers"):
    Conv2D  kernel [kh][kw][c_in][filters], then bias [filters] (when use_bias)
    Dense   kernel [c_in][units], then bias [units] (when use_bias)
    BatchNormalization  gamma [c], beta [c]; in the state: moving_mean [c], moving_variance [c]
The optimizer slots have the parameters' layout: Adam slot1 = m, slot2 = v; SGD
slot1 = the momentum velocity; RMSprop slot2 = the mean square, slot1 = momentum.

This module also knows each kind's output shape rule (as cnn.h's constructors),
so that a writer only gives the input shape and each layer's options; the
record's h, w, c are filled in, as the loader checks them.
"""
import struct
import zlib

import numpy as np

# CNN__LAYER_KINDS, in order: the type number is the index
KINDS = ["InputLayer", "Conv2D", "Dense", "BatchNormalization", "MaxPooling2D", "AveragePooling2D",
         "GlobalAveragePooling2D", "Flatten", "Dropout", "Activation", "Add", "Concatenate",
         "ZeroPadding2D", "UpSampling2D"]
ACTIVATIONS = ["linear", "relu", "sigmoid", "tanh", "softmax", "leaky_relu", "elu"]  # cnn_activation_type
VALID, SAME = 0, 1                                                                     # cnn_padding
LOSSES = [None, "categorical_crossentropy", "sparse_categorical_crossentropy", "binary_crossentropy",
          "mse"]                                                                       # cnn_loss
OPTIMIZERS = ["adam", "sgd", "rmsprop"]                                                # cnn_optimizer_type
ACCURACY = 1                                                                           # metrics bit
INT_FIELDS = ["h", "w", "c", "units", "kh", "kw", "sh", "sw", "padding", "activation", "use_bias", "trainable"]
FLOAT_FIELDS = ["alpha", "l1", "l2", "rate", "momentum", "epsilon"]
NEWEST_VERSION = 2


class FormatError(Exception):
    pass


class Layer:
    """One node of the graph: kind (a KINDS name), name, inputs (indices of earlier
    layers) and the record's fields as attributes (h, w, c, units, kh, ... epsilon)."""

    def __init__(self, kind, name, inputs=(), **fields):
        if kind not in KINDS:
            raise FormatError("unknown layer kind %r" % kind)
        self.kind, self.name, self.inputs = kind, name, list(inputs)
        for f in INT_FIELDS:
            setattr(self, f, int(fields.pop(f, 1 if f == "trainable" else 0)))
        for f in FLOAT_FIELDS:
            setattr(self, f, float(fields.pop(f, 0.0)))
        if fields:
            raise FormatError("layer %r: unknown fields %s" % (name, sorted(fields)))

    @property
    def shape(self):
        return (self.h, self.w, self.c)

    def record(self):
        return {f: getattr(self, f) for f in INT_FIELDS + FLOAT_FIELDS}

    def __repr__(self):
        return "Layer(%s %r <- %s, %dx%dx%d)" % (self.kind, self.name, self.inputs, self.h, self.w, self.c)


class Model:
    """A whole model file. params, state: float32 vectors; slots: None or
    (slot1, slot2); compiled: None or a dict with loss, metrics, optimizer,
    learning_rate, beta_1, beta_2, epsilon, momentum, rho, nesterov, clipnorm,
    clipvalue, global_clipnorm, step."""

    def __init__(self):
        self.layers, self.input, self.output = [], 0, 0
        self.seed, self.rescale, self.mean, self.std = 0, 1.0, None, None
        self.class_names, self.compiled = [], None
        self.params = np.zeros(0, np.float32)
        self.state = np.zeros(0, np.float32)
        self.slots = None
        self.version = 1

    def index(self, name):
        for i, layer in enumerate(self.layers):
            if layer.name == name:
                return i
        raise KeyError(name)

    def tensor_layout(self):
        """[(layer index, tensor name, in_state, offset, shape)] in file order."""
        out, p, s = [], 0, 0
        for i, layer in enumerate(self.layers):
            for name, state, shape in tensor_shapes(self, layer):
                n = int(np.prod(shape))
                out.append((i, name, state, s if state else p, shape))
                if state:
                    s += n
                else:
                    p += n
        return out

    def counts(self):
        p = s = 0
        for layer in self.layers:
            for _, state, shape in tensor_shapes(self, layer):
                if state:
                    s += int(np.prod(shape))
                else:
                    p += int(np.prod(shape))
        return p, s

    def tensors(self, layer, slot=None):
        """{name: array view, shaped} of one layer (a Layer or an index); slot 1 or 2:
        the same views into that optimizer slot (state tensors left out)."""
        i = layer if isinstance(layer, int) else self.layers.index(layer)
        out = {}
        for li, name, state, off, shape in self.tensor_layout():
            if li != i:
                continue
            if slot:
                if state or self.slots is None:
                    continue
                buf = self.slots[slot - 1]
            else:
                buf = self.state if state else self.params
            out[name] = buf[off:off + int(np.prod(shape))].reshape(shape)
        return out

    def set_tensor(self, layer, name, value):
        view = self.tensors(layer)[name]
        value = np.asarray(value, np.float32)
        if value.shape != view.shape:
            raise FormatError("layer %r: %s has shape %s, the layer wants %s" %
                              (self.layers[layer].name if isinstance(layer, int) else layer.name, name,
                               value.shape, view.shape))
        view[...] = value


def tensor_shapes(model, layer):
    """[(name, in_state, shape)] of a layer, as its kind's tensor() names them."""
    if layer.kind in ("Conv2D", "Dense"):
        cin = model.layers[layer.inputs[0]].c
        kernel = (layer.kh, layer.kw, cin, layer.units) if layer.kind == "Conv2D" else (cin, layer.units)
        return [("kernel", False, kernel)] + ([("bias", False, (layer.units,))] if layer.use_bias else [])
    if layer.kind == "BatchNormalization":
        c = (layer.c,)
        return [("gamma", False, c), ("beta", False, c), ("moving_mean", True, c), ("moving_variance", True, c)]
    return []


def window(n, k, s, padding):
    """cnn__window: output size and leading padding ('same': ceil(n/s) outputs)."""
    if padding == SAME:
        out = (n + s - 1) // s
        return out, max((out - 1) * s + k - n, 0) // 2
    return ((n - k) // s + 1 if n >= k else 0), 0


def infer_shape(model, layer):
    """Set layer.h, w, c from its inputs, as cnn.h's constructor does (and the
    fields cnn.h fills with defaults: strides, alpha); FormatError if it cannot be built."""
    ins = [model.layers[i] for i in layer.inputs]
    k = layer.kind
    if k == "InputLayer":
        return
    if not ins:
        raise FormatError("%s %r has no input" % (k, layer.name))
    x = ins[0]
    if k in ("Conv2D", "Dense", "Activation"):
        if layer.alpha == 0.0:
            layer.alpha = 0.3 if layer.activation == ACTIVATIONS.index("leaky_relu") else 1.0
    if k == "Conv2D":
        layer.sh, layer.sw = layer.sh or 1, layer.sw or 1
        layer.h, layer.w, layer.c = window(x.h, layer.kh, layer.sh, layer.padding)[0], \
            window(x.w, layer.kw, layer.sw, layer.padding)[0], layer.units
    elif k == "Dense":
        if x.h != 1 or x.w != 1:
            raise FormatError("Dense %r: input %r is %dx%dx%d, not flat" % (layer.name, x.name, x.h, x.w, x.c))
        layer.h, layer.w, layer.c = 1, 1, layer.units
    elif k in ("MaxPooling2D", "AveragePooling2D"):
        layer.kh, layer.kw = layer.kh or 2, layer.kw or 2
        layer.sh, layer.sw = layer.sh or layer.kh, layer.sw or layer.kw
        layer.h, layer.w, layer.c = window(x.h, layer.kh, layer.sh, layer.padding)[0], \
            window(x.w, layer.kw, layer.sw, layer.padding)[0], x.c
    elif k == "GlobalAveragePooling2D":
        layer.h, layer.w, layer.c = 1, 1, x.c
    elif k == "Flatten":
        layer.h, layer.w, layer.c = 1, 1, x.h * x.w * x.c
    elif k in ("BatchNormalization", "Dropout", "Activation"):
        layer.h, layer.w, layer.c = x.h, x.w, x.c
    elif k == "Add":
        for y in ins[1:]:
            if y.shape != x.shape:
                raise FormatError("Add %r: input %r %s does not match %r %s" % (layer.name, y.name, y.shape,
                                                                                 x.name, x.shape))
        layer.h, layer.w, layer.c = x.shape
    elif k == "Concatenate":
        for y in ins[1:]:
            if (y.h, y.w) != (x.h, x.w):
                raise FormatError("Concatenate %r: input %r %s does not match %r %s" %
                                  (layer.name, y.name, y.shape, x.name, x.shape))
        layer.h, layer.w, layer.c = x.h, x.w, sum(y.c for y in ins)
    elif k == "ZeroPadding2D":
        # kh, kw: top and left; the record's h, w give bottom and right. A writer sets
        # layer.pad = (top, bottom, left, right) before calling this.
        top, bottom, left, right = getattr(layer, "pad", (1, 1, 1, 1))
        layer.kh, layer.kw = top, left
        layer.h, layer.w, layer.c = x.h + top + bottom, x.w + left + right, x.c
    elif k == "UpSampling2D":
        layer.kh, layer.kw = layer.kh or 2, layer.kw or 2
        layer.h, layer.w, layer.c = x.h * layer.kh, x.w * layer.kw, x.c
    if layer.h <= 0 or layer.w <= 0 or layer.c <= 0:
        raise FormatError("%s %r: input %r of %dx%dx%d is too small for it" % (k, layer.name, x.name,
                                                                               x.h, x.w, x.c))


def zero_padding(model, layer):
    """(top, bottom, left, right) of a ZeroPadding2D layer."""
    x = model.layers[layer.inputs[0]]
    return layer.kh, layer.h - x.h - layer.kh, layer.kw, layer.w - x.w - layer.kw


# ---- reading ---------------------------------------------------------------

class _Reader:
    def __init__(self, data):
        self.data, self.pos = data, 0

    def take(self, n):
        if n > len(self.data) - self.pos:
            raise FormatError("truncated payload (wanted %d bytes at %d of %d)" % (n, self.pos, len(self.data)))
        b = self.data[self.pos:self.pos + n]
        self.pos += n
        return b

    def u32(self):
        return struct.unpack("<I", self.take(4))[0]

    def u64(self):
        return struct.unpack("<Q", self.take(8))[0]

    def f32(self):
        return struct.unpack("<f", self.take(4))[0]

    def floats(self, n):
        return np.frombuffer(self.take(4 * n), "<f4").astype(np.float32)

    def str(self):
        return self.take(self.u32()).decode("utf-8")


def loads(data):
    """A Model from the bytes of a .cnn file."""
    data = bytes(data)
    if len(data) < 24 or data[:8] != b"CNNMODEL":
        raise FormatError("not a cnn.h model file (bad magic)")
    version, plen = struct.unpack("<IQ", data[8:20])
    if not 1 <= version <= NEWEST_VERSION:
        raise FormatError("model file version %d is not supported (this reads 1 to %d)" % (version, NEWEST_VERSION))
    if plen != len(data) - 24:
        raise FormatError("model file is truncated or has trailing data")
    payload = data[20:20 + plen]
    if struct.unpack("<I", data[20 + plen:])[0] != zlib.crc32(payload) & 0xffffffff:
        raise FormatError("model file is corrupted (checksum mismatch)")
    r, m = _Reader(payload), Model()
    m.version = version
    n, m.input, m.output = r.u32(), r.u32(), r.u32()
    for i in range(n):
        t = r.u32()
        if t >= len(KINDS):
            raise FormatError("layer %d: unknown layer type %d" % (i, t))
        name = r.str()
        ins = [r.u32() for _ in range(r.u32())]
        if any(j >= i for j in ins):
            raise FormatError("layer %r: an input is not an earlier layer" % name)
        fields = {f: r.u32() for f in INT_FIELDS}
        fields.update({f: r.f32() for f in FLOAT_FIELDS})
        fields = {f: (v - (1 << 32) if f in INT_FIELDS and v >= 1 << 31 else v) for f, v in fields.items()}
        m.layers.append(Layer(KINDS[t], name, ins, **fields))
    m.seed, m.rescale = r.u64(), r.f32()
    c = r.u32()
    if c:
        m.mean, m.std = r.floats(c), r.floats(c)
    m.class_names = [r.str() for _ in range(r.u32())]
    if r.u32():
        cfg = {"loss": LOSSES[r.u32()], "metrics": r.u32(), "optimizer": OPTIMIZERS[r.u32()]}
        for k in ("learning_rate", "beta_1", "beta_2", "epsilon", "momentum", "rho"):
            cfg[k] = r.f32()
        cfg["nesterov"] = r.u32()
        cfg["clipnorm"] = cfg["clipvalue"] = cfg["global_clipnorm"] = 0.0
        if version >= 2:
            cfg["clipnorm"], cfg["clipvalue"], cfg["global_clipnorm"] = r.f32(), r.f32(), r.f32()
        cfg["step"] = r.u64()
        m.compiled = cfg
    m.params = r.floats(r.u64()).copy()
    m.state = r.floats(r.u64()).copy()
    if r.u32():
        m.slots = (r.floats(len(m.params)).copy(), r.floats(len(m.params)).copy())
    if r.pos != len(payload):
        raise FormatError("%d unexpected bytes after the weights" % (len(payload) - r.pos))
    if m.counts() != (len(m.params), len(m.state)):
        raise FormatError("the layers imply %d parameters and %d state values, the file has %d and %d" %
                          (m.counts() + (len(m.params), len(m.state))))
    return m


def load(path):
    with open(path, "rb") as f:
        return loads(f.read())


# ---- writing ---------------------------------------------------------------

def new_model(h, w, c, name="input"):
    """A Model holding only its input layer (add layers with add())."""
    m = Model()
    m.layers.append(Layer("InputLayer", name, (), h=h, w=w, c=c))
    return m


def add(model, kind, name, inputs, **fields):
    """Append a layer (inputs: layer indices or names), infer its shape, make room
    for its tensors (initialised as cnn.h's zero state: kernels 0, gamma 1,
    moving variance 1); returns its index."""
    pad = fields.pop("pad", None)
    ins = [i if isinstance(i, int) else model.index(i) for i in inputs]
    if any(l.name == name for l in model.layers):
        raise FormatError("two layers are named %r" % name)
    if not 0 < len(name.encode()) < 64:
        raise FormatError("layer name %r must have 1 to 63 bytes" % name)
    layer = Layer(kind, name, ins, **fields)
    if pad is not None:
        layer.pad = tuple(int(p) for p in pad)
    infer_shape(model, layer)
    old = {(i, t): v.copy() for i in range(len(model.layers)) for t, v in model.tensors(i).items()}
    model.layers.append(layer)
    p, s = model.counts()
    model.params, model.state = np.zeros(p, np.float32), np.zeros(s, np.float32)
    for (i, t), v in old.items():
        model.tensors(i)[t][...] = v
    for t, v in model.tensors(len(model.layers) - 1).items():
        if t in ("gamma", "moving_variance"):
            v[...] = 1
    model.output = len(model.layers) - 1
    return model.output


def dumps(model):
    """The bytes of a .cnn file for model (version 2 only when it clips)."""
    p, s = model.counts()
    if (p, s) != (len(model.params), len(model.state)):
        raise FormatError("the layers imply %d parameters and %d state values, the model has %d and %d" %
                          (p, s, len(model.params), len(model.state)))
    b = bytearray()
    u32 = lambda v: b.extend(struct.pack("<I", int(v) & 0xffffffff))
    u64 = lambda v: b.extend(struct.pack("<Q", int(v)))
    f32 = lambda v: b.extend(struct.pack("<f", float(v)))
    floats = lambda a: b.extend(np.asarray(a, "<f4").tobytes())

    def string(t):
        e = t.encode("utf-8")
        u32(len(e))
        b.extend(e)

    cfg = model.compiled
    clips = cfg is not None and any(cfg.get(k, 0) > 0 for k in ("clipnorm", "clipvalue", "global_clipnorm"))
    version = 2 if clips else 1
    u32(len(model.layers)), u32(model.input), u32(model.output)
    for layer in model.layers:
        u32(KINDS.index(layer.kind))
        string(layer.name)
        u32(len(layer.inputs))
        for i in layer.inputs:
            u32(i)
        for f in INT_FIELDS:
            u32(getattr(layer, f))
        for f in FLOAT_FIELDS:
            f32(getattr(layer, f))
    u64(model.seed), f32(model.rescale)
    if model.mean is not None:
        u32(len(model.mean)), floats(model.mean), floats(model.std)
    else:
        u32(0)
    u32(len(model.class_names))
    for n in model.class_names:
        string(n)
    u32(cfg is not None)
    if cfg is not None:
        u32(LOSSES.index(cfg["loss"])), u32(cfg.get("metrics", 0)), u32(OPTIMIZERS.index(cfg["optimizer"]))
        for k in ("learning_rate", "beta_1", "beta_2", "epsilon", "momentum", "rho"):
            f32(cfg.get(k, 0.0))
        u32(cfg.get("nesterov", 0))
        if version >= 2:
            f32(cfg.get("clipnorm", 0)), f32(cfg.get("clipvalue", 0)), f32(cfg.get("global_clipnorm", 0))
        u64(cfg.get("step", 0))
    u64(len(model.params)), floats(model.params)
    u64(len(model.state)), floats(model.state)
    has_slots = cfg is not None and model.slots is not None
    u32(has_slots)
    if has_slots:
        floats(model.slots[0]), floats(model.slots[1])
    payload = bytes(b)
    return b"CNNMODEL" + struct.pack("<IQ", version, len(payload)) + payload + \
        struct.pack("<I", zlib.crc32(payload) & 0xffffffff)


def save(model, path):
    with open(path, "wb") as f:
        f.write(dumps(model))
