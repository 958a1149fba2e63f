#!/usr/bin/env bash
# The wheels scripts/gpu_check.py needs on the device tool's CUDA image (Python 3.12, x86_64) that the image lacks
# (/work/.library/device/KINDS.md lists what it holds): the package's own dependencies grain, ml-collections,
# math-verify, tensorboardX and av (PyAV, FFmpeg inside: 36 MB), with theirs, and the [kernels] extra (tokamax and
# its small dependencies).
# Writes them to .whl/ in the repository root (ignored by git: add `/.whl/` to .git/info/exclude), which the
# device call names in `carry`; BUILD_NOTES.md "GPU check" has the call.
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS=(
  grain==0.2.18 array-record==0.8.6 portpicker==1.6.0
  ml-collections==1.1.0
  math-verify==0.9.0 latex2sympy2_extended==1.11.0 antlr4-python3-runtime==4.13.2
  tensorboardX==2.6.5
  av==18.1.0
  tokamax==0.0.12 qwix==0.1.8 einshape==1.0 immutabledict==4.3.1 typeguard==2.13.3
)
python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any -d .whl "${WHEELS[@]}"
ls -la .whl
