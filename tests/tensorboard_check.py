"""tensorboard_check.py - the Python half of tests/test_tensorboard.sh: reads the
event files tests/tensorboard_fit.c wrote with TensorBoard's own readers and
checks them against what that program printed (its History) and saved (its
weights). Runs in the virtual environment the shell script makes
(~/.cache/cnn-h/tb-venv, `pip install tensorboard`).

    python tensorboard_check.py DIR FIT_OUTPUT [RUN...]    (runs: a b c; default all)
    python tensorboard_check.py --example DIR CSV          (examples/cifar10_cnn --tensorboard
                                                            DIR --history CSV, 2 epochs)

Readers used:
  * tensorboard.compat.tensorflow_stub.pywrap_tensorflow.PyRecordReader_New, the
    record reader TensorBoard falls back on without TensorFlow: it checks both
    masked CRC-32Cs of every record and raises DataLossError on a bad one;
  * tensorboard.backend.event_processing.event_accumulator.EventAccumulator,
    what TensorBoard's legacy loader serves Scalars() and Histograms() from.
Prints PASS/FAIL lines; exits 1 if any check failed."""
import glob
import math
import os
import struct
import sys

from tensorboard.backend.event_processing import event_accumulator as ea
from tensorboard.compat.proto import event_pb2
from tensorboard.compat.tensorflow_stub import errors
from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import PyRecordReader_New

failures = 0


def check(ok, what, detail=""):
    global failures
    print("%s tensorboard reader: %s%s" % ("PASS" if ok else "FAIL", what, "" if ok or not detail else " (%s)" % detail))
    if not ok:
        failures += 1


def f32(x):
    """x rounded to float32, as simple_value holds it"""
    return struct.unpack("<f", struct.pack("<f", x))[0]


def event_file(folder):
    files = glob.glob(os.path.join(folder, "events.out.tfevents.*"))
    check(len(files) == 1 and files[0].endswith(".v2"), "%s holds one events.out.tfevents.*.v2 file" % folder,
          "found %s" % files)
    return files[0] if files else None


def strict_records(path):
    """every record, CRCs checked; None after a DataLossError"""
    reader, out = PyRecordReader_New(path, 0, None, None), []
    while True:
        try:
            reader.GetNext()
        except errors.OutOfRangeError:
            return out
        except errors.DataLossError as e:
            check(False, "every record's CRCs hold in %s" % path, str(e))
            return None
        out.append(event_pb2.Event.FromString(reader.record()))


def load(folder):
    path = event_file(folder)
    if path:
        recs = strict_records(path)
        if recs is not None:
            check(len(recs) > 1 and recs[0].file_version == "brain.Event:2",
                  "%s: %d records, CRCs good, the first is file_version brain.Event:2" % (folder, len(recs)))
    acc = ea.EventAccumulator(folder, size_guidance={ea.SCALARS: 0, ea.HISTOGRAMS: 0})
    acc.Reload()
    return acc


def scalars(acc, tag):
    try:
        return [(s.step, s.value) for s in acc.Scalars(tag)]
    except KeyError:
        return []


def expect_scalars(acc, run, tag, steps, values):
    got = scalars(acc, tag)
    want = [(s, f32(v)) for s, v in zip(steps, values)]
    check(got == want, "%s %s: steps %s, values = the History's (float32)" % (run, tag, steps),
          "got %s, want %s" % (got, want))


def tf_histogram(values):
    """TensorFlow's Histogram (tensorflow/core/lib/histogram) with its default
    buckets and EncodeToProto(preserve_zero_buckets=false), restated"""
    pos, v = [], 1.0e-12
    while v < 1.0e20:
        pos.append(v)
        v *= 1.1
    limits = [-sys.float_info.max] + [-x for x in reversed(pos)] + [0.0] + pos + [sys.float_info.max]
    counts = [0.0] * len(limits)
    import bisect
    for x in values:
        counts[bisect.bisect_right(limits, x)] += 1
    out_l, out_c, i = [], [], 0
    while i < len(limits):
        end, count, j = limits[i], counts[i], i + 1
        while count <= 0 and j < len(limits) and counts[j] <= 0:
            end, count, j = limits[j], counts[j], j + 1
        out_l.append(end)
        out_c.append(count)
        i = j
    return out_l, out_c


def example(folder, csv_path):
    """the tutorial network's run: its CSV log against the event files"""
    import csv
    rows = list(csv.DictReader(open(csv_path)))
    train, val = load(os.path.join(folder, "train")), load(os.path.join(folder, "validation"))
    epochs = [int(r["epoch"]) for r in rows]
    for key in ("loss", "accuracy"):
        expect_scalars(train, "example train", "epoch_" + key, epochs, [float(r[key]) for r in rows])
        expect_scalars(val, "example validation", "epoch_" + key, epochs, [float(r["val_" + key]) for r in rows])
    tags = train.Tags()["histograms"]
    want = {"conv_1/kernel_0/histogram": 3 * 3 * 1 * 64, "batch_norm_1/moving_variance_0/histogram": 64,
            "fc1/kernel_0/histogram": 800 * 512, "softmax/bias_0/histogram": 10}
    got = {t: train.Histograms(t)[-1].histogram_value.num for t in want if t in tags}
    check(len(tags) == 18 and got == want, "example: 18 weight histograms (%s)" % ", ".join(
        "%s num %d" % (t, n) for t, n in want.items()), "got %d tags, %s" % (len(tags), got))
    return 1 if failures else 0


def main():
    if sys.argv[1] == "--example":
        return example(sys.argv[2], sys.argv[3])
    folder, fit_output = sys.argv[1], sys.argv[2]
    runs = sys.argv[3:] or ["a", "b", "c"]
    hist, steps = {}, None
    for line in open(fit_output):
        p = line.split()
        if p and p[0] == "STEPS":
            steps = int(p[1])
        if p and p[0] == "HIST":
            hist.setdefault(p[1], {}).setdefault(p[2], []).append(float(p[4]))
    check(steps and all(r in hist for r in runs), "the C program printed its History (%s)" % " ".join(runs))
    epochs = [0, 1, 2]

    for run in [r for r in runs if r in ("a", "b")]:
        h = hist.get(run, {})
        train, val = load(os.path.join(folder, run, "train")), load(os.path.join(folder, run, "validation"))
        want_train = {"epoch_loss", "epoch_accuracy"} | ({"batch_loss", "batch_accuracy"} if run == "b" else set())
        want_val = {"epoch_loss", "epoch_accuracy", "evaluation_loss_vs_iterations",
                    "evaluation_accuracy_vs_iterations"}
        check(set(train.Tags()["scalars"]) == want_train, "%s/train scalar tags %s" % (run, sorted(want_train)),
              "got %s" % train.Tags()["scalars"])
        check(set(val.Tags()["scalars"]) == want_val, "%s/validation scalar tags %s" % (run, sorted(want_val)),
              "got %s" % val.Tags()["scalars"])
        for key in ("loss", "accuracy"):
            expect_scalars(train, run + "/train", "epoch_" + key, epochs, h.get(key, []))
            expect_scalars(val, run + "/validation", "epoch_" + key, epochs, h.get("val_" + key, []))
            expect_scalars(val, run + "/validation", "evaluation_%s_vs_iterations" % key,
                           [steps * (e + 1) for e in epochs], h.get("val_" + key, []))
        if run == "b":  # every batch: steps 1..3*steps, each epoch's last = the epoch's value
            for key in ("loss", "accuracy"):
                got = scalars(train, "batch_" + key)
                check([s for s, _ in got] == list(range(1, 3 * steps + 1)),
                      "b/train batch_%s at steps 1..%d" % (key, 3 * steps), "got steps %s" % [s for s, _ in got])
                ends = [v for s, v in got if s % steps == 0]
                check(ends == [f32(x) for x in h.get(key, [])],
                      "b/train batch_%s at each epoch's last batch = epoch_%s" % (key, key), "got %s" % ends)
            check(train.Tags()["histograms"] == [], "b/train has no histograms (histogram_freq 0)")
        if run == "a":
            weights = {}
            for line in open(os.path.join(folder, "weights.txt")):
                p = line.split()
                weights[p[0]] = [f32(float(x)) for x in p[2:]]  # %.9g: the float32 exactly
                check(int(p[1]) == len(p) - 2, "weights.txt: %s has its %s values" % (p[0], p[1]))
            tags = train.Tags()["histograms"]
            check(set(tags) == set(weights),
                  "a/train histogram tags: %d, one a weight tensor (%s, ...)" % (len(weights), sorted(weights)[0]),
                  "got %s" % tags)
            for tag in sorted(set(tags) & set(weights)):
                evs = train.Histograms(tag)
                check([e.step for e in evs] == epochs, "%s at steps 0, 1, 2" % tag, "got %s" % [e.step for e in evs])
                hv, w = evs[-1].histogram_value, weights[tag]
                bl, bc = tf_histogram(w)
                ok = (hv.num == len(w) and hv.min == min(w) and hv.max == max(w) and
                      math.isclose(hv.sum, math.fsum(w), rel_tol=1e-12, abs_tol=1e-12) and
                      math.isclose(hv.sum_squares, math.fsum(x * x for x in w), rel_tol=1e-12) and
                      sum(hv.bucket) == len(w) and list(hv.bucket_limit) == bl and list(hv.bucket) == bc)
                check(ok, "%s (step 2): num %d = the weights, min/max/sum/sum_squares, %d buckets as "
                          "TensorFlow's default ones" % (tag, hv.num, len(hv.bucket)),
                      "num %s min %s max %s sum %s (want %d %s %s %s)" % (hv.num, hv.min, hv.max, hv.sum, len(w),
                                                                         min(w), max(w), math.fsum(w)))
    if "c" in runs:
        h = hist.get("c", {})
        base = os.path.join(folder, "c", "nested", "run")
        train = load(os.path.join(base, "train"))
        check(not os.path.exists(os.path.join(base, "validation")), "c: no validation data, no validation folder")
        got = scalars(train, "batch_loss")
        check([s for s, _ in got] == list(range(3, 3 * steps + 1, 3)), "c/train batch_loss every 3 steps",
              "got %s" % got)
        expect_scalars(train, "c/train", "epoch_loss", epochs, h.get("loss", []))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
