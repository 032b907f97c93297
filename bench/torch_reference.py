#!/usr/bin/python3
"""torch_reference.py - the Keras CIFAR-10 tutorial network in PyTorch, the
reference that bench/train_bench.c (images per second) and bench/rss_cifar.sh
(peak memory) are read against.

The network and training follow Keras semantics (DESIGN.md section 5):
  input 32x32x3 NHWC, converted to NCHW inside the model
  conv_1 Conv2D 64 3x3 valid relu, BatchNorm (eps 1e-3, Keras momentum 0.99), MaxPool 2
  conv_2 Conv2D 32 3x3 valid relu, BatchNorm, MaxPool 2
  flatten in NHWC order (as Keras channels_last), Dense 512 relu, Dropout 0.2,
  Dense 256 relu, Dropout 0.2, Dense 10 (softmax fused into the loss)
  glorot-uniform kernels, zero biases; Adam lr 1e-3, betas (0.9, 0.999), eps 1e-7;
  cross-entropy on the logits (log_softmax + nll).
Left as PyTorch has them (no bearing on speed or memory): Adam adds eps to
sqrt(v_hat) where Keras adds it to sqrt(v), and the BatchNorm moving variance
is updated with the unbiased batch variance.

Usage (with /usr/bin/python3: Debian's python3-torch is importable only there):
  bench/torch_reference.py --images N [--batch-size B] [--threads T] [--infer]
                           [--device cpu|cuda] [--shape HxWxC]
      synthetic data (uniform [0,1) images, labels i%10), 3 warm-up steps, then
      N images timed on one batch (as bench/train_bench.c does); --infer times
      prediction (eval mode, no_grad, batch 256). Prints "img/s: X" last.
      --device cuda runs on the first CUDA GPU (model and the one batch stay on
      it; the timing waits for the GPU to finish). --shape 28x28x1 gives the
      network Fashion-MNIST's input (examples/cifar10_cnn's offline default);
      the default is CIFAR-10's 32x32x3.
  bench/torch_reference.py --rss-cifar DIR [--threads T] [--batch-size B] [--limit N]
      loads every image of DIR (one subfolder per class of 32x32 images, such as
      the CIFAR-10 training JPEGs) into memory as uint8, trains one epoch at
      batch 32 (shuffled), and prints "peak_rss_mb: X" last (ru_maxrss).
      --limit N trains on only N of the loaded images (all are still loaded).
"""
import argparse
import os
import resource
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class TutorialNet(nn.Module):
    def __init__(self, classes=10, channels_last=False, shape=(32, 32, 3)):
        super().__init__()
        self.channels_last = channels_last
        h, w, c = shape
        self.conv_1 = nn.Conv2d(c, 64, 3)
        # Keras momentum 0.99 (moving = 0.99*moving + 0.01*batch) is PyTorch momentum 0.01
        self.batch_norm_1 = nn.BatchNorm2d(64, eps=1e-3, momentum=0.01)
        self.conv_2 = nn.Conv2d(64, 32, 3)
        self.batch_norm_2 = nn.BatchNorm2d(32, eps=1e-3, momentum=0.01)
        # valid 3x3 convolutions and 2x2 pools: 32x32 -> 30 -> 15 -> 13 -> 6 (28x28: 26, 13, 11, 5)
        self.fc1 = nn.Linear(((h - 2) // 2 - 2) // 2 * (((w - 2) // 2 - 2) // 2) * 32, 512)
        self.dropout1 = nn.Dropout(0.2)
        self.fc2 = nn.Linear(512, 256)
        self.dropout2 = nn.Dropout(0.2)
        self.softmax = nn.Linear(256, classes)  # logits; softmax is in the loss / predict
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_uniform_(m.weight)  # glorot_uniform, fans as Keras counts them
                nn.init.zeros_(m.bias)

    def forward(self, x):  # x: [N, 32, 32, 3] float
        x = x.permute(0, 3, 1, 2)  # NHWC -> NCHW view
        if not self.channels_last:
            x = x.contiguous()  # plain NCHW memory (the view alone is channels_last memory)
        x = F.max_pool2d(self.batch_norm_1(F.relu(self.conv_1(x))), 2)
        x = F.max_pool2d(self.batch_norm_2(F.relu(self.conv_2(x))), 2)
        x = torch.flatten(x.permute(0, 2, 3, 1), 1)  # flatten in NHWC order, as Keras does
        x = self.dropout1(F.relu(self.fc1(x)))
        x = self.dropout2(F.relu(self.fc2(x)))
        return self.softmax(x)


def make_model(args):
    torch.manual_seed(1)
    model = TutorialNet(channels_last=args.channels_last, shape=args.shape)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.999), eps=1e-7)
    return model, opt


def train_step(model, opt, x, y):
    opt.zero_grad(set_to_none=True)
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    return loss


def blas_in_use():
    """torch's BLAS: "mkl" for PyPI wheels; Debian's torch is built "generic" and
    takes libblas.so.3 from the alternatives system (the reference BLAS unless
    OpenBLAS is installed or on LD_LIBRARY_PATH), so name the file it mapped."""
    import re
    m = re.search(r"BLAS_INFO=([^,\s]+)", torch.__config__.show())
    info = m.group(1) if m else "unknown"
    if info == "generic":
        try:
            with open("/proc/self/maps") as f:
                libs = sorted({os.path.realpath(line.split()[-1]) for line in f
                               if re.search(r"/lib(open)?blas[^/]*\.so", line)})
            info += " " + ",".join(libs)
        except OSError:
            pass
    return info


def rss_now_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / (1024 * 1024)


def device_info(dev):
    """What the figures were measured on: the BLAS on the CPU, the GPU and its float modes on CUDA."""
    if dev.type != "cuda":
        return "blas: %s" % blas_in_use()
    return "device: %s  cudnn: %s  tf32 (conv / matmul): %s / %s" % (
        torch.cuda.get_device_name(dev), torch.backends.cudnn.version(),
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)


def bench(args):
    B = 256 if args.infer else args.batch_size
    dev = torch.device(args.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        sys.exit("torch_reference: --device %s: torch %s sees no CUDA device" % (args.device, torch.__version__))
    model, opt = make_model(args)
    model.to(dev)
    g = torch.Generator().manual_seed(12345)
    h, w, c = args.shape
    x = torch.rand(B, h, w, c, generator=g).to(dev)
    y = (torch.arange(B) % 10).to(dev)
    # CUDA runs asynchronously: wait for the GPU before reading the clock
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    if args.infer:
        model.eval()
        with torch.no_grad():
            for _ in range(3):  # warm-up
                F.softmax(model(x), dim=1)
            sync()
            t0 = time.perf_counter()
            done = 0
            while done < args.images:
                F.softmax(model(x), dim=1)
                done += B
            sync()
            dt = time.perf_counter() - t0
    else:
        model.train()
        for _ in range(3):  # warm-up
            train_step(model, opt, x, y)
        sync()
        t0 = time.perf_counter()
        done = 0
        while done < args.images:
            train_step(model, opt, x, y)
            done += B
        sync()
        dt = time.perf_counter() - t0
    print("torch: %s  %s" % (torch.__version__, device_info(dev)))
    print("threads: %d  batch: %d  input: %dx%dx%d  mode: %s%s" % (
        torch.get_num_threads(), B, h, w, c, "inference" if args.infer else "training",
        "  channels_last" if args.channels_last else ""))
    print("img/s: %.1f" % (done / dt))


def decoder():
    """A function path -> HxWx3 uint8 numpy array, from what this interpreter has."""
    try:
        import numpy as np
        from PIL import Image

        def dec(path):
            with Image.open(path) as im:
                return np.asarray(im.convert("RGB"), dtype=np.uint8)
        return dec
    except ImportError:
        pass
    try:
        import torchvision.io as tvio

        def dec(path):
            return tvio.read_image(path, tvio.ImageReadMode.RGB).permute(1, 2, 0).numpy()
        return dec
    except ImportError:
        pass
    sys.exit("torch_reference: no JPEG decoder: apt-get install python3-pil (or pip install pillow)")


def rss_cifar(args):
    import numpy as np
    rss_import = rss_now_mb()
    classes = sorted(d for d in os.listdir(args.rss_cifar)
                     if os.path.isdir(os.path.join(args.rss_cifar, d)))
    files = []
    for label, c in enumerate(classes):
        folder = os.path.join(args.rss_cifar, c)
        files += [(os.path.join(folder, f), label) for f in sorted(os.listdir(folder))
                  if f.lower().endswith((".jpg", ".jpeg", ".png", ".bmp"))]
    if not files:
        sys.exit("torch_reference: no images under %s" % args.rss_cifar)
    dec = decoder()
    t0 = time.perf_counter()
    images = np.empty((len(files), 32, 32, 3), dtype=np.uint8)
    for i, (path, _) in enumerate(files):
        im = dec(path)
        if im.shape != (32, 32, 3):
            sys.exit("torch_reference: %s is %s, not 32x32x3" % (path, im.shape))
        images[i] = im
    images = torch.from_numpy(images)
    labels = torch.tensor([lab for _, lab in files], dtype=torch.int64)
    t_load = time.perf_counter() - t0
    rss_load = rss_now_mb()

    model, opt = make_model(args)
    model.train()
    n = len(files) if args.limit is None else min(args.limit, len(files))
    perm = torch.randperm(len(files), generator=torch.Generator().manual_seed(1))[:n]
    B = args.batch_size
    t0 = time.perf_counter()
    loss_sum, correct = 0.0, 0
    for s in range(0, n, B):
        idx = perm[s:s + B]
        x = images[idx].float().mul_(1.0 / 255)  # uint8 -> [0, 1] per batch
        y = labels[idx]
        opt.zero_grad(set_to_none=True)
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        loss.backward()
        opt.step()
        loss_sum += loss.item() * len(idx)
        correct += (logits.argmax(1) == y).sum().item()
    t_train = time.perf_counter() - t0
    print("torch: %s  blas: %s" % (torch.__version__, blas_in_use()))
    print("threads: %d  batch: %d  images loaded: %d  trained: %d  classes: %d" % (
        torch.get_num_threads(), B, len(files), n, len(classes)))
    print("load: %.1f s  train: %.1f s (%.1f img/s)  loss: %.4f  accuracy: %.4f" % (
        t_load, t_train, n / t_train, loss_sum / n, correct / n))
    print("rss_after_import_mb: %.1f  rss_after_load_mb: %.1f" % (rss_import, rss_load))
    print("peak_rss_mb: %.1f" % (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))


def positive(v):
    x = int(v)
    if x <= 0:
        raise argparse.ArgumentTypeError("needs a positive integer")
    return x


def shape(v):
    try:
        h, w, c = (int(t) for t in v.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError("give HxWxC, such as 28x28x1")
    if min(h, w) < 10 or c < 1:
        raise argparse.ArgumentTypeError("the network needs images of at least 10x10 and 1 channel")
    return (h, w, c)


def main():
    p = argparse.ArgumentParser(description="The Keras CIFAR-10 tutorial network in PyTorch: "
                                "images per second, or peak memory of one CIFAR-10 epoch.")
    p.add_argument("--images", type=positive, default=2048, help="images per timed run (default 2048)")
    p.add_argument("--batch-size", type=positive, default=32, help="training batch (default 32)")
    p.add_argument("--threads", type=positive, default=None, help="intra-op threads (default: all cores)")
    p.add_argument("--infer", action="store_true", help="time prediction with batch 256 instead of training")
    p.add_argument("--channels-last", action="store_true",
                   help="feed the convolutions the NHWC memory as is (channels_last) instead of a NCHW copy")
    p.add_argument("--device", default="cpu",
                   help="where the timed run goes: cpu (default), cuda or cuda:N (a CUDA GPU)")
    p.add_argument("--shape", type=shape, default=(32, 32, 3), metavar="HxWxC",
                   help="input images of the timed run (default 32x32x3, CIFAR-10; 28x28x1 is Fashion-MNIST)")
    p.add_argument("--rss-cifar", metavar="DIR", help="train one epoch on an image folder, print peak RSS")
    p.add_argument("--limit", type=positive, default=None, help="with --rss-cifar: train on only N images")
    args = p.parse_args()
    threads = args.threads or len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    if args.rss_cifar:
        if args.device != "cpu" or args.shape != (32, 32, 3):
            p.error("--rss-cifar measures CIFAR-10 on the CPU: leave out --device and --shape")
        rss_cifar(args)
    else:
        bench(args)


if __name__ == "__main__":
    main()
