#!/usr/bin/env bash
# tests/test_examples.sh - end-to-end checks of the example programs.
#
# Run from the repository root after `make examples` has built
# examples/cifar10_cnn, evaluate, predict, tiny_step and inspect.
# Prints one "PASS name" or "FAIL name: why" line per check and exits
# non-zero when any check failed. Needs only bash, coreutils and gzip (and
# /usr/bin/python3 with NumPy for the .npz checks, skipped without it): the
# test images are written here as PGM/PPM files (real Fashion-MNIST test
# images when /usr/share/datasets/fashion-mnist exists, random pixels
# otherwise). About 30 s on 2 cores. KEEP_TMP=1 keeps the files for a look.

set -u
EX=examples
FM=/usr/share/datasets/fashion-mnist
T=$(mktemp -d "${TMPDIR:-/tmp}/cnn_examples.XXXXXX") || exit 1
if [ -n "${KEEP_TMP:-}" ]; then echo "# files kept in $T"; else trap 'rm -rf "$T"' EXIT; fi
failed=0

pass() { echo "PASS $1"; }
fail() { echo "FAIL $1: $2"; failed=$((failed + 1)); }

# Run a command with a time limit; stdout in $T/out, stderr in $T/err, status in $rc.
run() {
    timeout 300 "$@" >"$T/out" 2>"$T/err" </dev/null
    rc=$?
}

# expect_error NAME CMD...: status 1 or 2 and exactly one line on stderr.
expect_error() {
    local name=$1 lines
    shift
    run "$@"
    lines=$(grep -c '' "$T/err")
    if [ "$rc" -ge 124 ]; then
        fail "$name" "status $rc (crash or hang): $(head -c 200 "$T/err" | tr '\n' '|')"
    elif [ "$rc" -ne 1 ] && [ "$rc" -ne 2 ]; then
        fail "$name" "status $rc, expected 1 or 2"
    elif [ "$lines" -ne 1 ]; then
        fail "$name" "$lines lines on stderr, expected 1: $(head -c 300 "$T/err" | tr '\n' '|')"
    else
        pass "$name"
    fi
}

# expect_ok NAME CMD...: status 0 (the output stays in $T/out for more checks).
expect_ok() {
    local name=$1
    shift
    run "$@"
    if [ "$rc" -eq 0 ]; then
        pass "$name"
        return 0
    fi
    fail "$name" "status $rc: $(tail -c 300 "$T/err" | tr '\n' '|')"
    return 1
}

# check NAME CONDITION-COMMAND... WHY: PASS when the command succeeds.
check() {
    local name=$1 why=${!#}
    set -- "${@:2:$#-2}"
    if "$@"; then pass "$name"; else fail "$name" "$why"; fi
}

for p in cifar10_cnn evaluate predict tiny_step inspect; do
    if [ ! -x "$EX/$p" ]; then
        fail "examples_built" "$EX/$p is missing (run make examples first)"
        exit 1
    fi
done

# ---------------------------------------------------------------- fixtures
# $T/fm: 200 labelled 28x28 grey images in class folders 0..9 (PGM).
mkdir -p "$T/fm"
if [ -f "$FM/t10k-images-idx3-ubyte.gz" ] && [ -f "$FM/t10k-labels-idx1-ubyte.gz" ]; then
    have_fm=1
    gzip -dc "$FM/t10k-images-idx3-ubyte.gz" 2>/dev/null | tail -c +17 | head -c $((784 * 200)) >"$T/raw"
    gzip -dc "$FM/t10k-labels-idx1-ubyte.gz" 2>/dev/null | tail -c +9 | head -c 200 |
        od -An -v -tu1 -w1 | tr -d ' ' >"$T/labels"
else
    have_fm=0
    head -c $((784 * 200)) /dev/urandom >"$T/raw"
    for ((i = 0; i < 200; i++)); do echo $((i % 10)); done >"$T/labels"
fi
i=0
while read -r label; do
    mkdir -p "$T/fm/$label"
    { printf 'P5\n28 28\n255\n'; dd if="$T/raw" bs=784 skip=$i count=1 status=none; } >"$T/fm/$label/$i.pgm"
    i=$((i + 1))
done <"$T/labels"
# $T/rgb: 32x32 colour images of two classes (PPM), the CIFAR-10 shape.
for cls in a b; do
    mkdir -p "$T/rgb/$cls"
    for j in 1 2 3; do
        { printf 'P6\n32 32\n255\n'; head -c 3072 /dev/urandom; } >"$T/rgb/$cls/$j.ppm"
    done
done
# $T/one: a folder with a single class (nothing to tell apart); $T/empty: nothing.
mkdir -p "$T/one/only" "$T/empty"
cp "$T/rgb/a/1.ppm" "$T/rgb/a/2.ppm" "$T/one/only/"
# Files that are not what they claim to be.
head -c 4096 /dev/urandom >"$T/garbage.cnn"
{ printf 'CNNMODEL'; head -c 200 /dev/urandom; } >"$T/badmagic.cnn"
echo "this is not an image" >"$T/notimage.png"

# ------------------------------------------------------------------ --help
for p in cifar10_cnn evaluate predict inspect; do
    if expect_ok "${p}_help" "$EX/$p" --help; then
        grep -q '^usage:' "$T/out" || fail "${p}_help_usage" "--help prints no usage line"
    fi
done

# ----------------------------------------------- cifar10_cnn: bad input
C=$EX/cifar10_cnn
expect_error train_unknown_option "$C" --bogus
expect_error train_epochs_not_a_number "$C" --epochs abc
expect_error train_epochs_negative "$C" --epochs -1
expect_error train_epochs_missing_value "$C" --epochs
expect_error train_batch_size_zero "$C" --batch-size 0
expect_error train_val_split_out_of_range "$C" --val-split 1.5
expect_error train_seed_negative "$C" --seed -3
expect_error train_verbose_out_of_range "$C" --verbose 3
expect_error train_split_and_val_data "$C" --val-split 0.2 --val-data "$T/fm"
expect_error train_data_missing "$C" --data /nonexistent
expect_error train_split_without_opencl "$C" --split equal
expect_error train_device_unknown "$C" --device tpu
expect_error train_data_empty_folder "$C" --data "$T/empty" --epochs 1
expect_error train_data_one_class "$C" --data "$T/one" --epochs 1
expect_error train_val_data_shape "$C" --data "$T/fm" --val-data "$T/rgb" --epochs 1
expect_error train_save_unwritable "$C" --save /nonexistent/dir/x.cnn

# ------------------------------------------------- cifar10_cnn: a real run
# The offline default: Fashion-MNIST (or the fixture folder without it).
data_opt=()
[ "$have_fm" = 1 ] || data_opt=(--data "$T/fm")
if expect_ok train_fashion_mnist "$C" "${data_opt[@]}" --limit 600 --epochs 1 --verbose 2 \
    --threads 2 --save "$T/x.cnn" --history "$T/x.csv" --plot "$T/x.png"; then
    cp "$T/out" "$T/train.out"
    missing=""
    for layer in conv_1 batch_norm_1 pool_1 conv_2 batch_norm_2 pool_2 flatten fc1 dropout1 fc2 dropout2 softmax; do
        grep -qw "$layer" "$T/train.out" || missing="$missing $layer"
    done
    check train_summary_layers [ -z "$missing" ] "summary lacks:$missing"
    check train_verbose2_line grep -q -e ' - loss: .* - val_accuracy: ' "$T/train.out" \
        "no epoch line with ' - loss: ' and ' - val_accuracy: '"
    check train_best_val_accuracy grep -Eq '^best val_accuracy: [0-9.]+ at epoch 1$' "$T/train.out" \
        "no 'best val_accuracy: X at epoch 1' line"
    check train_throughput grep -Eq '^throughput: [0-9.]+ img/s$' "$T/train.out" \
        "no 'throughput: X img/s' line"
    check train_saved_model [ -s "$T/x.cnn" ] "--save wrote no model"
    check train_plot_png [ "$(head -c 4 "$T/x.png" 2>/dev/null | tail -c 3)" = "PNG" ] \
        "--plot wrote no PNG file"
    check train_csv_header [ "$(head -n 1 "$T/x.csv" 2>/dev/null)" = "epoch,accuracy,loss,val_accuracy,val_loss" ] \
        "csv header is '$(head -n 1 "$T/x.csv" 2>/dev/null)'"
    check train_csv_rows [ "$(grep -c '' "$T/x.csv" 2>/dev/null)" = 2 ] \
        "csv has $(grep -c '' "$T/x.csv" 2>/dev/null) lines, expected header + 1 row"
fi

# An image folder, validation from another folder, and the same seed twice.
if expect_ok train_image_folder_val_data "$C" --data "$T/fm" --val-data "$T/fm" --epochs 2 \
    --batch-size 16 --threads 2 --seed 7 --verbose 0 --history "$T/a.csv"; then
    check train_val_data_reported grep -Eq '^best val_accuracy: [0-9.]+ at epoch [12]$' "$T/out" \
        "no best val_accuracy line"
fi
if expect_ok train_same_seed_again "$C" --data "$T/fm" --val-data "$T/fm" --epochs 2 \
    --batch-size 16 --threads 2 --seed 7 --verbose 0 --history "$T/b.csv"; then
    check train_deterministic cmp -s "$T/a.csv" "$T/b.csv" "two runs with --seed 7 differ"
fi
if expect_ok train_no_validation "$C" --data "$T/fm" --val-split 0 --limit 50 --epochs 1 \
    --threads 2 --verbose 0 --save "$T/fm.cnn"; then
    check train_no_validation_report grep -Eq '^final accuracy: [0-9.]+' "$T/out" \
        "no final accuracy line without validation"
fi
# the tutorial's augmentation: a flow feeds fit, the epoch line and the model file are there
if expect_ok train_augment "$C" --data "$T/fm" --augment --val-split 0.2 --limit 100 --epochs 1 \
    --threads 2 --verbose 2 --save "$T/aug.cnn"; then
    check train_augment_epoch_line grep -q ' - val_accuracy: ' "$T/out" "no epoch line with validation"
    check train_augment_model test -s "$T/aug.cnn" "no model file"
fi
# augment_preview: a PNG grid of 2 rows x (1 + 3) pictures
if expect_ok preview_grid "$EX/augment_preview" --data "$T/fm" --tutorial --images 2 --n 3 \
    --out "$T/grid.png"; then
    check preview_grid_png sh -c "head -c 8 '$T/grid.png' | od -An -tx1 | grep -q '89 50 4e 47'" "not a PNG"
fi
expect_error preview_bad_zoom "$EX/augment_preview" --data "$T/fm" --zoom-range -1 --out "$T/g2.png"
expect_error preview_no_out "$EX/augment_preview" --data "$T/fm"

# CIFAR-10 binary format: one batch file of 10000 records (label 0, black images).
head -c $((3073 * 10000)) /dev/zero >"$T/data_batch_1.bin"
expect_ok train_cifar10_binary "$C" --data "$T/data_batch_1.bin" --limit 64 --epochs 1 \
    --threads 2 --verbose 0 --save "$T/rgb.cnn"

# A NumPy archive (np.savez, when /usr/bin/python3 has NumPy): x_train, y_train to train on,
# x_test, y_test the validation data; evaluate scores the model on x_test, y_test.
if /usr/bin/python3 -c 'import numpy' 2>/dev/null; then
    /usr/bin/python3 -c "import numpy as np; r = np.random.default_rng(0); np.savez('$T/c10.npz', \
        x_train=r.integers(0, 256, (64, 32, 32, 3), dtype=np.uint8), y_train=np.arange(64).reshape(64, 1) % 10, \
        x_test=r.integers(0, 256, (16, 32, 32, 3), dtype=np.uint8), y_test=np.arange(16).reshape(16, 1) % 10)"
    if expect_ok train_npz "$C" --data "$T/c10.npz" --epochs 1 --threads 2 --verbose 0 --save "$T/npz.cnn"; then
        check train_npz_validation grep -q 'train: 64 images of 32x32x3, 10 classes; validation: 16 images' \
            "$T/out" "x_test, y_test were not the validation data"
        if expect_ok eval_npz "$EX/evaluate" --model "$T/npz.cnn" --data "$T/c10.npz"; then
            check eval_npz_x_test grep -Eq 'accuracy +[0-9.]+ +16$' "$T/out" "no accuracy line over 16 images"
        fi
    fi
    expect_error train_npz_missing_key "$C" --data "$T/c10.npz" --x-key x_val --epochs 1
    check train_npz_missing_key_named grep -q "no member 'x_val.npy'" "$T/err" "the error does not name x_val.npy"
fi

# ------------------------------------------------------------- evaluate
E=$EX/evaluate
[ -s "$T/x.cnn" ] || cp "$T/fm.cnn" "$T/x.cnn" 2>/dev/null
head -c 100 "$T/x.cnn" >"$T/truncated.cnn" 2>/dev/null
expect_error eval_unknown_option "$E" --bogus
expect_error eval_no_model "$E" --data "$T/fm"
expect_error eval_no_data "$E" --model "$T/x.cnn"
expect_error eval_batch_size_zero "$E" --model "$T/x.cnn" --data "$T/fm" --batch-size 0
expect_error eval_batch_size_not_a_number "$E" --model "$T/x.cnn" --data "$T/fm" --batch-size x
expect_error eval_model_missing "$E" --model /nonexistent --data "$T/fm"
expect_error eval_model_garbage "$E" --model "$T/garbage.cnn" --data "$T/fm"
expect_error eval_model_bad_payload "$E" --model "$T/badmagic.cnn" --data "$T/fm"
expect_error eval_model_truncated "$E" --model "$T/truncated.cnn" --data "$T/fm"
expect_error eval_data_missing "$E" --model "$T/x.cnn" --data /nonexistent
# A 28x28x1 model cannot read 32x32x3 images: a clean error, not a crash.
expect_error eval_shape_mismatch_folder "$E" --model "$T/x.cnn" --data "$T/rgb"
expect_error eval_shape_mismatch_cifar10 "$E" --model "$T/x.cnn" --data "$T/data_batch_1.bin"

if expect_ok eval_report "$E" --model "$T/x.cnn" --data "$T/fm" --batch-size 64; then
    last=$(tail -n 1 "$T/out")
    check eval_last_line grep -Eq '^loss: [0-9.]+ - accuracy: [0-9.]+$' <<<"$last" \
        "last line is '$last'"
    check eval_report_rows grep -q 'weighted avg' "$T/out" "no classification report"
    check eval_confusion_matrix grep -q '^confusion matrix' "$T/out" "no confusion matrix"
    report_acc=$(awk '$1 == "accuracy" { print $2 }' "$T/out")
    final_acc=$(sed -n 's/^loss: .* - accuracy: //p' <<<"$last")
    check eval_accuracy_agrees [ "${report_acc:-none}" = "$final_acc" ] \
        "report accuracy '$report_acc' but evaluate says '$final_acc'"
fi
if [ -s "$T/rgb.cnn" ]; then
    expect_ok eval_rgb_model "$E" --model "$T/rgb.cnn" --data "$T/rgb"
fi
# --plot: the confusion matrix as a PNG, the text report unchanged
if expect_ok eval_plot "$E" --model "$T/x.cnn" --data "$T/fm" --plot "$T/confusion.png"; then
    check eval_plot_png sh -c "head -c 8 '$T/confusion.png' | od -An -tx1 | grep -q '89 50 4e 47'" "not a PNG"
    check eval_plot_report grep -q '^confusion matrix (rows' "$T/out" "the text matrix is gone"
fi
expect_error eval_plot_unwritable "$E" --model "$T/x.cnn" --data "$T/fm" --plot /nonexistent/dir/c.png

# ------------------------------------------------------------ tiny_step
# the hand-checkable lesson: every tensor, the gradients and their check, no NaN
if expect_ok tiny_step_runs "$EX/tiny_step"; then
    check tiny_step_gradient_check grep -Eq '^gradient check: largest relative error [0-9.e+-]+ over all 51 parameters \(below 2e-2' \
        "$T/out" "no passing gradient check line"
    check tiny_step_no_nan sh -c "! grep -qiw -e nan -e inf '$T/out'" "NaN or Inf in the output"
    check tiny_step_loss_by_hand [ "$(grep -c '^loss = ' "$T/out")" = 2 ] "no loss lines"
    # the loss worked out by hand from the printed probabilities is the library's
    hand=$(sed -n 's/^loss = .* = \([0-9.]*\) *(by hand)$/\1/p' "$T/out")
    lib=$(sed -n 's/^loss = \([0-9.]*\) *(cnn_input_gradient)$/\1/p' "$T/out")
    check tiny_step_losses_agree [ -n "$hand" -a "$hand" = "$lib" ] "by hand '$hand', library '$lib'"
fi

# -------------------------------------------------------------- predict
P=$EX/predict
imgs=("$T"/fm/*/*.pgm)
img1=${imgs[0]}
img2=${imgs[${#imgs[@]} - 1]}
expect_error predict_unknown_option "$P" --bogus --model "$T/x.cnn" "$img1"
expect_error predict_no_model "$P" "$img1"
expect_error predict_no_images "$P" --model "$T/x.cnn"
expect_error predict_top_not_a_number "$P" --model "$T/x.cnn" --top abc "$img1"
expect_error predict_top_zero "$P" --model "$T/x.cnn" --top 0 "$img1"
expect_error predict_model_missing "$P" --model /nonexistent "$img1"
expect_error predict_model_garbage "$P" --model "$T/garbage.cnn" "$img1"
expect_error predict_not_an_image "$P" --model "$T/x.cnn" "$T/notimage.png"
expect_error predict_image_missing "$P" --model "$T/x.cnn" /nonexistent.png

p3='[0-9]\.[0-9]{4}'
if expect_ok predict_top3 "$P" --model "$T/x.cnn" "$img1" "$img2"; then
    check predict_top3_format [ "$(grep -Ec "^.+: .+ $p3, .+ $p3, .+ $p3\$" "$T/out")" = 2 ] \
        "output is '$(head -c 300 "$T/out" | tr '\n' '|')'"
fi
# A 32x32 colour image for a 28x28 grey model: converted and resized.
if expect_ok predict_resize_top1 "$P" --model "$T/x.cnn" --top 1 "$T/rgb/a/1.ppm"; then
    check predict_top1_format grep -Eq "^.+/1\.ppm: .+ $p3\$" "$T/out" \
        "output is '$(head -c 300 "$T/out" | tr '\n' '|')'"
fi
if [ -s "$T/rgb.cnn" ]; then
    expect_ok predict_grey_to_rgb "$P" --model "$T/rgb.cnn" "$img1"
fi

# -------------------------------------------------------------- inspect
I=$EX/inspect
if expect_ok inspect_default_layer "$I" --model "$T/x.cnn" --image "$img1" --out "$T/ins"; then
    for f in filters features saliency; do
        check "inspect_${f}_png" sh -c "head -c 8 '$T/ins-$f.png' | od -An -tx1 | grep -q '89 50 4e 47'" \
            "$T/ins-$f.png is not a PNG"
    done
    check inspect_prediction grep -Eq "predicted .+ with probability [0-9]\.[0-9]{4}\$" "$T/out" \
        "output is '$(head -c 300 "$T/out" | tr '\n' '|')'"
fi
# a deeper layer, a vector layer, and a colour picture for a grey model
expect_ok inspect_layer_pool_2 "$I" --model "$T/x.cnn" --image "$T/rgb/a/1.ppm" --out "$T/ins2" --layer pool_2
expect_ok inspect_layer_dense "$I" --model "$T/x.cnn" --image "$img1" --out "$T/ins3" --layer fc2
expect_error inspect_unknown_layer "$I" --model "$T/x.cnn" --image "$img1" --out "$T/ins4" --layer nonesuch
expect_error inspect_no_model "$I" --image "$img1" --out "$T/ins5"
expect_error inspect_no_out "$I" --model "$T/x.cnn" --image "$img1"
expect_error inspect_not_an_image "$I" --model "$T/x.cnn" --image "$T/notimage.png" --out "$T/ins6"
expect_error inspect_model_garbage "$I" --model "$T/garbage.cnn" --image "$img1" --out "$T/ins7"
expect_error inspect_out_unwritable "$I" --model "$T/x.cnn" --image "$img1" --out /nonexistent/dir/x

# --device opencl: the same model on OpenCL devices (when built with OpenCL),
# here two PoCL CPU devices; a device index that does not exist is one error line
if [ -x "$EX/devices" ] && [ -f /etc/OpenCL/vendors/pocl.icd ] && [ -s "$T/x.cnn" ]; then
    mkdir -p "$T/vendors" && ln -sf /etc/OpenCL/vendors/pocl.icd "$T/vendors/pocl.icd"
    export OCL_ICD_VENDORS="$T/vendors" POCL_DEVICES="pthread pthread"
    expect_ok devices_lists_two "$EX/devices" &&
        check devices_two_pocl [ "$(grep -c 'Portable Computing Language' "$T/out")" = 2 ] \
            "output is '$(head -c 300 "$T/out" | tr '\n' '|')'"
    expect_error train_device_index_missing "$C" --limit 64 --epochs 1 --device opencl:5
    expect_error train_split_too_many_weights "$C" --limit 64 --epochs 1 --device opencl:0,1 --split 1:2:3
    if expect_ok train_on_two_devices "$C" --limit 256 --epochs 1 --val-split 0.25 --verbose 2 \
        --device opencl:0,1 --split 3:1 --save "$T/cl.cnn"; then
        check train_two_devices_learns grep -q "val_accuracy" "$T/out" "no validation line"
    fi
    if expect_ok evaluate_on_opencl "$E" --model "$T/x.cnn" --data "$T/fm" --device opencl:0; then
        cl_acc=$(sed -n 's/^loss: .* - accuracy: //p' "$T/out")
        check evaluate_opencl_same_accuracy [ "${cl_acc:-none}" = "${final_acc:-}" ] \
            "OpenCL accuracy '$cl_acc', CPU '${final_acc:-}'"
    fi
    expect_ok predict_on_opencl "$P" --model "$T/x.cnn" --device opencl "$img1"
    unset OCL_ICD_VENDORS POCL_DEVICES
fi

echo "# test_examples: $failed failed"
[ "$failed" -eq 0 ]
