#!/bin/bash
# gpu_fetch.sh - download, without installing, what bench/gpu_check.sh needs on a GPU
# machine that has no network: Debian's OpenCL ICD loader, OpenCL headers, CLBlast,
# clinfo and the Fashion-MNIST dataset (examples/cifar10_cnn's offline default), as .deb
# files in bench/gpu-debs/ (an ignored folder: .gitignore holds "bench/gpu-debs/").
#
# Run it here, on a Debian or Ubuntu machine with network access, from anywhere:
#   bench/gpu_fetch.sh                 the packages (about 33 MB, 31 of them the dataset)
#   bench/gpu_fetch.sh --no-dataset    without dataset-fashion-mnist (the GPU machine has
#                                      /usr/share/datasets/fashion-mnist already)
#   bench/gpu_fetch.sh --torch[=REQ]   also PyTorch's wheels (REQ: a pip requirement,
#                                      default "torch"; with their dependencies, CUDA's
#                                      libraries: gigabytes) into bench/gpu-debs/wheels,
#                                      for a GPU machine whose python3 lacks torch (the
#                                      workplace's H200 machines have it, and carry 64 MiB)
# Then copy bench/gpu-debs/ along with the repository and run bench/gpu_check.sh there.
#
# Needs: apt-get with working package lists (`apt-get update` as root first if
# `apt-cache policy clinfo` shows no candidate), and for --torch python3 with pip.
# No root: apt-get download only saves files. The packages are for amd64 (the GPU
# machine's processor; GPU_FETCH_ARCH=arm64 for another): on a machine of another
# architecture the script keeps package lists of that architecture under $TMPDIR.
# Wheels are for CPython $GPU_FETCH_PYTHON (default 3.12) on manylinux x86-64.
#
# Besides the named packages it fetches what they depend on, except the C and C++
# runtimes every machine with a compiler has (libc6, libgcc-s1, libstdc++6):
# libstdc++6 and libgcc-s1 go to bench/gpu-debs/fallback/, and gpu_check.sh uses them
# only where the machine's own libstdc++ is too old for CLBlast.
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=bench/gpu-debs
ARCH=${GPU_FETCH_ARCH:-amd64}
PYVER=${GPU_FETCH_PYTHON:-3.12}
dataset=1 torch_req=""
for a in "$@"; do
  case $a in
    --no-dataset) dataset=0 ;;
    --torch) torch_req=torch ;;
    --torch=*) torch_req=${a#--torch=} ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "gpu_fetch: unknown option '$a' (--no-dataset, --torch[=REQ], --help)" >&2; exit 2 ;;
  esac
done
command -v apt-get >/dev/null || { echo "gpu_fetch: needs apt-get (Debian or Ubuntu)" >&2; exit 1; }

# apt options: on a machine of another architecture, package lists of the GPU machine's
# own, kept apart from the system's (as /work/.library/device/README.md does it)
apt_opts=()
if [ "$(dpkg --print-architecture)" != "$ARCH" ] || [ -n "${GPU_FETCH_OWN_LISTS:-}" ]; then
  lists=$(mktemp -d "${TMPDIR:-/tmp}/gpu_fetch_lists.XXXXXX")
  trap 'rm -rf "$lists"' EXIT
  mkdir -p "$lists/lists/partial" "$lists/cache/archives/partial"
  apt_opts=(-o "APT::Architecture=$ARCH" -o "APT::Architectures=$ARCH"
            -o "Dir::State::Lists=$lists/lists" -o "Dir::Cache=$lists/cache")
  echo "== package lists for $ARCH (this machine is $(dpkg --print-architecture))"
  apt-get "${apt_opts[@]}" update -qq
fi

# as root, apt would try to download as its user _apt, who cannot write here: say no
dl_opts=()
[ "$(id -u)" = 0 ] && dl_opts=(-o APT::Sandbox::User=root)

exists() { apt-cache "${apt_opts[@]}" show --no-all-versions "$1" >/dev/null 2>&1; }
# depends PKG: the packages PKG needs (first choice of each "a | b"), no recommends
depends() {
  apt-cache "${apt_opts[@]}" depends --no-recommends --no-suggests --no-conflicts --no-breaks \
    --no-replaces --no-enhances "$1" | awk '$1 == "Depends:" && $2 !~ /^</ {print $2}' | sed 's/:.*//' | sort -u
}

# CLBlast's runtime package is named after its soname (libclblast1 on Debian 12):
# take it from what libclblast-dev depends on
exists libclblast-dev || { echo "gpu_fetch: no package libclblast-dev here: run apt-get update (as root)" >&2; exit 1; }
clblast_rt=$(depends libclblast-dev | grep -m1 '^libclblast[0-9]' || true)
[ -n "$clblast_rt" ] || { echo "gpu_fetch: cannot tell CLBlast's runtime package from libclblast-dev" >&2; exit 1; }

# what gpu_check.sh uses; the OpenCL headers are split in two on Debian 12
# (opencl-c-headers, opencl-clhpp-headers) with opencl-headers depending on both
want=(ocl-icd-libopencl1 ocl-icd-opencl-dev opencl-headers opencl-c-headers opencl-clhpp-headers
      "$clblast_rt" libclblast-dev clinfo)
[ "$dataset" = 1 ] && want+=(dataset-fashion-mnist)
usual="libc6 libgcc-s1 libstdc++6 gcc-12-base gcc-13-base gcc-14-base libcrypt1" # every machine has these
fallback=(libstdc++6 libgcc-s1)

# the closure of their dependencies, less the usual runtimes
declare -A seen=()
queue=()
for p in "${want[@]}"; do
  if exists "$p"; then seen[$p]=1; queue+=("$p")
  else echo "gpu_fetch: no package '$p' for $ARCH in this machine's sources" >&2; exit 1; fi
done
extra=()
while [ ${#queue[@]} -gt 0 ]; do
  p=${queue[0]}; queue=("${queue[@]:1}")
  for d in $(depends "$p"); do
    [ -n "${seen[$d]:-}" ] && continue
    seen[$d]=1
    case " $usual " in *" $d "*) continue ;; esac
    extra+=("$d"); queue+=("$d")
  done
done

mkdir -p "$DEST/fallback"
rm -f "$DEST"/*.deb "$DEST"/fallback/*.deb
echo "== downloading into $DEST: ${want[*]}${extra[*]:+ (and their dependencies: ${extra[*]})}"
(cd "$DEST" && apt-get "${apt_opts[@]}" "${dl_opts[@]}" download -q "${want[@]}" "${extra[@]}")
echo "== downloading the C++ runtime, used only where the GPU machine's is too old: ${fallback[*]}"
(cd "$DEST/fallback" && apt-get "${apt_opts[@]}" "${dl_opts[@]}" download -q "${fallback[@]}")

if [ -n "$torch_req" ]; then
  echo "== downloading wheels for '$torch_req' (CPython $PYVER, manylinux x86-64) into $DEST/wheels"
  mkdir -p "$DEST/wheels" && rm -f "$DEST"/wheels/*.whl # one version of each, or pip refuses
  plat=()
  for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
    plat+=(--platform "$p")
  done
  python3 -m pip download -q --only-binary=:all: --python-version "$PYVER" --implementation cp \
    "${plat[@]}" -d "$DEST/wheels" "$torch_req"
fi

echo "== in $DEST:"
(cd "$DEST" && find . -name '*.deb' -o -name '*.whl' | sort | xargs du -k | awk '{printf "  %7d kB  %s\n", $1, $2}')
echo "total: $(du -sh "$DEST" | cut -f1). Copy $DEST along with the repository, then run bench/gpu_check.sh on the GPU machine."
