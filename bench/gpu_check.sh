#!/usr/bin/env bash
# The GPU check: one short script for a lent GPU machine (see /work/.library/device), about
# 9 minutes on one H200. Prepare on the CPU machine first (the GPU machine cannot fetch
# anything; its image has torch and transformers but not these):
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#     -d .whl gymnasium farama-notifications docker fastapi starlette pydantic pydantic-core \
#     typing-inspection annotated-types uvicorn
# then run it there with carry=[".whl"]:  bash bench/gpu_check.sh
# Results land in $OUT (or ./gpu_results), at most 8 files as the device tool returns them:
# gpu.txt (the machine), timings.jsonl (one JSON line per timing check) and math.tgz.part-*,
# the math comparison's logs, tables and run folders (the teacher's weights in bf16, none of
# the method runs' weights), so the comparison can be resumed elsewhere:
#   cat math.tgz.part-* | tar xz      (restores runs/distill_compare_gpu/full/math)
# GPU_CHECK_QUICK=1 runs the same steps at smoke sizes (to try the script on a CPU first);
# GPU_CHECK_SECONDS (default 540) is the time the whole script may take.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu_results}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
START=$(date +%s)
QUICK=${GPU_CHECK_QUICK:-}
BUDGET=${GPU_CHECK_SECONDS:-540}
elapsed() { echo $(( $(date +%s) - START )); }
if ! python3 -c "import gymnasium" 2>/dev/null && ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
python3 -m pip install -q --no-deps --no-build-isolation --no-index -e . 2>&1 | grep -i error
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)" | tee -a "$OUT/gpu.txt"

echo "== 1. training step of a Qwen3-0.6B-shaped model at bf16: tokens/s and MFU [$(elapsed)s]"
if [ -n "$QUICK" ]; then MFU=(--shape tiny --seq 64 --steps 2); OPD=(--shape tiny --batch 4 --prompt 32 --new 16)
else MFU=(--shape 0.6b --seq 2048 --batch 8 --steps 5); OPD=(); fi
timeout 120 python3 bench/train_step_mfu.py "${MFU[@]}" | tee -a "$OUT/timings.jsonl"

echo "== 2. OPD step (Qwen3-0.6B student, Qwen3-1.7B teacher): sampling, scoring, update [$(elapsed)s]"
timeout 150 python3 bench/opd_step.py --steps 2 "${OPD[@]}" | tee -a "$OUT/timings.jsonl"

echo "== 3. vllm: backend (only where vllm is installed) [$(elapsed)s]"
if python3 -c "import vllm" 2>/dev/null; then
  timeout 120 python3 bench/gpu_check_vllm.py | tee -a "$OUT/timings.jsonl"
else
  echo '{"vllm": "not installed on this machine: the vllm: backend was not exercised"}' | tee -a "$OUT/timings.jsonl"
fi

# The math comparison needs a teacher that solves the problems; on a CPU the base-size
# teacher's budget reached 0.03. Here the teacher is the small size (~25M) with a larger budget.
echo "== 4. distillation family on math with tools (bench/distill_compare.py) [$(elapsed)s]"
MODE=full
MATH=(--envs math --out runs/distill_compare_gpu --teacher-size small
      --methods grpo opd sod skill_sd opsd opsd_frozen dagger)
if [ -n "$QUICK" ]; then MODE=quick; MATH+=(--quick --seeds 1 --jobs 2)
else MATH+=(--jobs 16 --budget warm_episodes=256 warm_steps=300 teacher_iters=4
            teacher_episodes=256 teacher_steps=300 teacher_batch=64 teacher_lr=3e-3); fi
RUNS=runs/distill_compare_gpu/$MODE/math; mkdir -p "$RUNS/logs"
LEFT=$(( BUDGET - $(elapsed) ))
timeout $(( LEFT > 60 ? LEFT - 40 : 20 )) python3 bench/distill_compare.py "${MATH[@]}" 2>&1 \
  | grep --line-buffered -v "it/s\]" | tee "$RUNS/logs/compare.log"
LEFT=$(( BUDGET - $(elapsed) ))
if [ "$LEFT" -gt 100 ]; then
  echo "== 4b. the same at on-policy lr 2e-4 [$(elapsed)s]"
  timeout $(( LEFT - 40 )) python3 bench/distill_compare.py "${MATH[@]}" --lr 2e-4 2>&1 \
    | grep --line-buffered -v "it/s\]" | tee "$RUNS/logs/compare_lr2e-4.log"
fi
sleep 3  # a timed-out bench's workers notice their parent is gone within 2 s and exit
cp runs/distill_compare_gpu/$MODE/table*.md "$RUNS/logs/" 2>/dev/null
# The teacher's weights travel in bf16 (the small size is ~100 MB in fp32); the method runs'
# weights and every checkpoint stay behind.
python3 - "$RUNS" <<'PY'
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

for f in Path(sys.argv[1]).glob("teacher*/final/model.safetensors"):
    w = {k: v.to(torch.bfloat16) for k, v in load_file(f).items()}
    save_file(w, f.with_name("model.bf16.safetensors"), {"format": "pt"})
PY
tar czf /tmp/math.tgz --exclude='*/checkpoints' --exclude='*_seed*/final' --exclude='*/init_teacher*' \
  --exclude='*/teacher*/final/model.safetensors' "$RUNS"
if [ "$(stat -c %s /tmp/math.tgz)" -gt 58000000 ]; then  # the device tool returns 64 MB at most
  tar czf /tmp/math.tgz --exclude='*/checkpoints' --exclude='*/final' --exclude='*/init_teacher*' "$RUNS"
fi
split -b 15m /tmp/math.tgz "$OUT/math.tgz.part-"
ls -la "$OUT"; echo "done [$(elapsed)s]"
