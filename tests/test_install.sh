#!/bin/bash
# test_install.sh - make install / make uninstall, and a user program built with
# pkg-config alone. Installs into a temporary prefix, builds (outside the
# repository, no -I.) a program that trains one step with
# `pkg-config --cflags --libs cnn` and runs it; compiles and links one with
# cnn_opencl.pc when OpenCL's and CLBlast's headers exist; installs again with
# DESTDIR (a packager's staging folder: files under DESTDIR, paths in the .pc
# files without it); uninstalls both and checks that no file is left.
cd "$(dirname "$0")/.." || exit 2
CC=${CC:-gcc}
P=$(mktemp -d /tmp/cnn-install.XXXXXX) || exit 2
trap 'rm -rf "$P"' EXIT
rc=0
pass() { echo "PASS install: $1"; }
fail() { echo "FAIL install: $1"; rc=1; }
command -v pkg-config >/dev/null || { echo "FAIL install: pkg-config missing (scripts/ensure-deps.sh test installs pkgconf)"; exit 1; }

prefix=$P/prefix
if out=$(make -s install PREFIX="$prefix" 2>&1); then pass "make install PREFIX=$prefix"
else fail "make install PREFIX=$prefix"; printf '%s\n' "$out" | tail; exit 1; fi
for f in include/cnn.h include/cnn_augment.h include/cnn_opencl.h share/pkgconfig/cnn.pc \
         share/pkgconfig/cnn_opencl.pc share/cnn/examples/cifar10_cnn.c; do
  [ -f "$prefix/$f" ] || fail "$prefix/$f missing"
done
for f in tools/*.py; do # the tools, where the tree has them
  [ -f "$f" ] && { [ -x "$prefix/share/cnn/$f" ] || fail "$prefix/share/cnn/$f missing"; }
done
cmp -s cnn.h "$prefix/include/cnn.h" && pass "headers, pkg-config files, the examples' sources (and tools) in place" ||
  fail "include/cnn.h differs from cnn.h"

export PKG_CONFIG_PATH=$prefix/share/pkgconfig
flags=$(pkg-config --cflags --libs cnn) || fail "pkg-config --cflags --libs cnn"
echo "  pkg-config --cflags --libs cnn: $flags"
[ "$(pkg-config --modversion cnn)" = "$(sed -n 's/^#define CNN_VERSION "\([^"]*\)".*/\1/p' cnn.h)" ] &&
  pass "pkg-config --modversion cnn = CNN_VERSION ($(pkg-config --modversion cnn))" || fail "cnn.pc's Version"

mkdir -p "$P/user"
cat > "$P/user/main.c" <<'C'
/* a user's program: the installed headers, found by pkg-config; one training step */
#define CNN_IMPLEMENTATION
#define CNN_AUGMENT_IMPLEMENTATION
#define CNN_AUGMENT_STB_IMPLEMENTATION
#include <cnn.h>
#include <cnn_augment.h>

int main(void) {
    cnn_model *m = cnn_model_new();
    cnn_node *x = cnn_input(m, 6, 6, 1, "input");
    x = cnn_conv2d(m, x, .filters = 2, .kernel_size = {3, 3}, .activation = CNN_RELU);
    x = cnn_flatten(m, x);
    x = cnn_dense(m, x, .units = 2, .activation = CNN_SOFTMAX);
    cnn_model_set_output(m, x);
    cnn_compile(m, .loss = CNN_CATEGORICAL_CROSSENTROPY, .metrics = CNN_ACCURACY);
    float xs[2 * 36], ys[4] = {1, 0, 0, 1}, loss = -1;
    for (int i = 0; i < 2 * 36; i++) xs[i] = (float)(i % 7) / 7.0f;
    int rc = cnn_train_on_batch(m, xs, ys, 2, 2, &loss, NULL);
    printf("cnn %s: one training step, loss %.4f\n", CNN_VERSION, loss);
    cnn_model_free(m);
    return rc != CNN_OK || !(loss > 0);
}
C
# shellcheck disable=SC2086
if out=$(cd "$P/user" && $CC -std=c99 -Wall -Wextra main.c $flags -o main 2>&1) && [ -z "$out" ]; then
  pass "a program built with \$(pkg-config --cflags --libs cnn) alone, no warnings"
  if out=$("$P/user/main" 2>&1); then pass "it trains one step: $out"; else fail "the program: $out"; fi
else fail "build with pkg-config cnn"; printf '%s\n' "$out" | head -10; fi

if [ -f /usr/include/CL/cl.h ] && [ -f /usr/include/clblast_c.h ]; then
  cat > "$P/user/cl.c" <<'C'
#define CNN_IMPLEMENTATION
#define CNN_OPENCL_IMPLEMENTATION
#include <cnn.h>
#include <cnn_opencl.h>
int main(void) { return cnn_opencl_devices(NULL, 0) < 0; }
C
  clflags=$(pkg-config --cflags --libs cnn_opencl)
  echo "  pkg-config --cflags --libs cnn_opencl: $clflags"
  # shellcheck disable=SC2086
  if out=$(cd "$P/user" && $CC -std=c99 -Wall -Wextra cl.c $clflags -o cl 2>&1) && [ -z "$out" ]; then
    pass "a program built with \$(pkg-config --cflags --libs cnn_opencl) compiles and links"
  else fail "build with pkg-config cnn_opencl"; printf '%s\n' "$out" | head -10; fi
fi

# a packager's staging install: files under DESTDIR, the .pc files naming PREFIX
stage=$P/stage
if make -s install PREFIX=/opt/cnn DESTDIR="$stage" >/dev/null 2>&1 && [ -f "$stage/opt/cnn/include/cnn.h" ] &&
   grep -qx 'prefix=/opt/cnn' "$stage/opt/cnn/share/pkgconfig/cnn.pc" && ! grep -q "$stage" "$stage/opt/cnn/share/pkgconfig/"*.pc
then pass "make install DESTDIR=... PREFIX=/opt/cnn: files staged, .pc files name /opt/cnn"
else fail "make install with DESTDIR"; fi

n=$(find "$prefix" -type f | wc -l)
make -s uninstall PREFIX="$prefix" >/dev/null
left=$(find "$prefix" -type f -o -type l; find "$prefix" -name '*cnn*')
[ -z "$left" ] && pass "make uninstall removed all $n files it installed (left: $(cd "$prefix" && find . -type d | sort | tr '\n' ' '))" ||
  fail "make uninstall left: $left"
make -s uninstall PREFIX=/opt/cnn DESTDIR="$stage" >/dev/null
left=$(find "$stage" -type f -o -type l; find "$stage" -name '*cnn*' -not -path "$stage/opt/cnn")
[ -z "$left" ] && pass "make uninstall DESTDIR=... removed the staged files" || fail "make uninstall DESTDIR left: $left"
exit $rc
