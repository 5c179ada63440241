#!/usr/bin/env bash
# The CUDA checks in one go (for a lent GPU machine with torch + transformers, no install needed):
# the tests that run models (incl. the CUDA-marked ones), then the throughput benchmark.
#   OUT=/tmp/out bash benchmarks/cuda_checks.sh
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__, 'cuda', torch.cuda.is_available())"
timeout "${TEST_SECONDS:-200}" python3 -m pytest -q -p no:cacheprovider -rs tests/test_eval_fast.py tests/test_eval.py \
    tests/test_metrics.py tests/test_center_offset.py 2>&1 | grep -v "it/s]" | tail -25
timeout "${BENCH_SECONDS:-330}" python3 benchmarks/eval_throughput.py --device cuda --json "$OUT/eval_throughput.json" 2>&1 \
    | grep -v -E "it/s\]|Loading weights|requires torchvision|UserWarning|warnings.warn"
