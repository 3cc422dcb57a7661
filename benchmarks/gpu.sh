#!/usr/bin/env bash
# One short GPU measurement on a machine with an H100/H200 and no network (../shared/GPU.md).
#
# Before (on the workstation, once): the GPU machine's python3 (3.12) lacks open_clip_torch,
# ftfy, wcwidth, webdataset, braceexpand and PyYAML; put their wheels in .whl/ (git-ignored):
#   mkdir -p .whl && cp ../shared/wheels/*.whl .whl/
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       --implementation cp --platform manylinux2014_x86_64 -d .whl pyyaml
# Then run this script there (the device tool runs it in the repository root; carry .whl).
# Results (results.json, logs) go to $OUT, or to the folder given as $1.
set -euo pipefail
out="${1:-${OUT:-/tmp/biotrove-gpu}}"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site \
    .whl/*.whl
export PYTHONPATH="/tmp/site:$PWD" HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
python3 benchmarks/gpu_bench.py --out "$out"
