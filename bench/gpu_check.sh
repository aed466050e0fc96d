#!/usr/bin/env bash
# The GPU check: one short script for a lent GPU machine (see /work/.library/device).
# Prepare on the CPU machine first (the GPU machine cannot fetch anything):
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#     -d .whl gymnasium farama-notifications cloudpickle docker rich pyyaml fastapi starlette \
#     pydantic pydantic-core uvicorn typing-inspection annotated-types
# then run it there with carry=[".whl"]:  bash bench/gpu_check.sh
# Results land in $OUT (or ./gpu_results): one JSON line per check.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu_results}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
python3 -m pip install -q --no-deps --no-build-isolation --no-index -e . 2>&1 | tail -2
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"

echo "== 1. training step of a Qwen3-0.6B-shaped model at bf16: tokens/s and MFU"
timeout 240 python3 bench/train_step_mfu.py --shape 0.6b --seq 2048 --batch 8 --steps 5 | tee "$OUT/train_step_mfu.json"

echo "== 2. OPD step: sampling, teacher scoring and update split (if the bench exists)"
if [ -f bench/opd_step.py ]; then
  timeout 180 python3 bench/opd_step.py | tee "$OUT/opd_step.json"
fi

echo "== 3. vllm: backend (only where vllm is installed)"
if python3 -c "import vllm" 2>/dev/null; then
  timeout 240 python3 bench/gpu_check_vllm.py | tee "$OUT/vllm.json"
else
  echo '{"vllm": "not installed on this machine: the vllm: backend was not exercised"}' | tee "$OUT/vllm.json"
fi

echo "== 4. model tests on CUDA"
timeout 240 python3 -m pytest -q -x tests/test_hf_policy.py tests/test_losses.py 2>&1 | tee "$OUT/pytest.txt" | tail -5
