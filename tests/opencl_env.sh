#!/bin/bash
# opencl_env.sh MODE PROGRAM [ARGS...] - run PROGRAM under the OpenCL setup of MODE,
# with the ICD loader limited to a temporary vendors folder (OCL_ICD_VENDORS):
#   pocl2    two identical PoCL CPU devices      POCL_DEVICES="pthread pthread", pocl.icd only
#   vendors  one PoCL device + Mesa rusticl      POCL_DEVICES=pthread, RUSTICL_ENABLE=llvmpipe,
#            (llvmpipe), two platforms           pocl.icd and rusticl.icd
#   uneven   a fast and a slow PoCL device       POCL_DEVICES="pthread basic", pocl.icd only
#   none     no OpenCL platform at all           an empty vendors folder
# e.g. bash tests/opencl_env.sh pocl2 build/tests/test_opencl pocl2
# A missing driver prints a FAIL line naming the Debian package and exits 1.
[ $# -ge 2 ] || { echo "usage: $0 pocl2|vendors|uneven|none PROGRAM [ARGS...]" >&2; exit 2; }
mode=$1; shift
vendors=${OPENCL_VENDORS_DIR:-/etc/OpenCL/vendors}
dir=$(mktemp -d "${TMPDIR:-/tmp}/cnn_opencl_vendors.XXXXXX") || exit 2
trap 'rm -rf "$dir"' EXIT

need() { # need FILE.icd PACKAGE: link the loader's file into the folder
  if [ -f "$vendors/$1" ]; then ln -s "$vendors/$1" "$dir/$1"
  else echo "FAIL opencl $mode: $vendors/$1 missing (apt-get install $2)"; exit 1; fi
}
unset CNN_OPENCL_DEVICES RUSTICL_ENABLE POCL_DEVICES
case $mode in
  pocl2)   need pocl.icd pocl-opencl-icd; export POCL_DEVICES="pthread pthread" ;;
  uneven)  need pocl.icd pocl-opencl-icd; export POCL_DEVICES="pthread basic" ;;
  vendors) need pocl.icd pocl-opencl-icd; need rusticl.icd mesa-opencl-icd
           export POCL_DEVICES="pthread" RUSTICL_ENABLE=llvmpipe ;;
  none)    ;;
  *) echo "$0: unknown mode '$mode' (pocl2, vendors, uneven, none)" >&2; exit 2 ;;
esac
export OCL_ICD_VENDORS=$dir
"$@"
