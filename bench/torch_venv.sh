#!/bin/sh
# torch_venv.sh - prints the interpreter of a current PyTorch from the Python package index,
# installing it first when missing: a virtual environment outside the repository,
# ~/.cache/cnn-h/torch-venv (CNN_TORCH_VENV overrides). PyPI's torch for Linux brings its CUDA
# libraries too (a few GB) and then runs on the CPU. Prints nothing (and says why on stderr)
# when it cannot be had; TORCH_PIP=0 skips it.
[ "${TORCH_PIP:-1}" = 0 ] && exit 0
venv=${CNN_TORCH_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/cnn-h/torch-venv}
if ! "$venv/bin/python" -c 'import torch, numpy' 2>/dev/null; then
  echo "torch_venv.sh: installing torch and numpy from PyPI into $venv (a few GB)" >&2
  { python3 -m venv "$venv" && "$venv/bin/pip" install -q torch numpy; } >&2 ||
    { echo "torch_venv.sh: could not install torch from PyPI; that column is left out" >&2; exit 0; }
fi
echo "$venv/bin/python"
