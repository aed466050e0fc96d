#!/usr/bin/env bash
# The GPU check: one call of at most 10 minutes on a lent GPU machine (one H100 or H200), inputs
# the working tree (well under 64 MiB). Run it there as:   bash bench/gpu_check.sh
# It measures, in this order (each part bounded by `timeout`, the whole by GPU_CHECK_SECONDS):
#   0. vLLM: if `import vllm` fails, `pip install vllm` against the image's torch starts in the
#      background (PyPI, if the machine reaches it; it is recorded either way);
#   1. training MFU at the Qwen3-0.6B shape, bf16, seq 2048 (bench/train_step_mfu.py): eager
#      against torch.compile, fused kernels (Liger if it imports, else mentorgym's chunked
#      cross-entropy) and sequence packing, each on top of the last (goal: MFU >= 0.40);
#   2. one OPD step, Qwen3-0.6B student and Qwen3-1.7B teacher (bench/opd_step.py, sampled-token
#      loss), split into weight sync, sampling, teacher scoring and update: `--sampler hf`, then
#      `--sampler vllm` where vLLM imports (goal: sampling < 50% of the step);
#   3. the `vllm:` backend's functional checks (bench/gpu_check_vllm.py), if time is left;
#   4. with --math only: the distillation family on math (bench/distill_compare.py; minutes).
# Results land in $OUT (else ./gpu_results): gpu.txt (the machine), timings.jsonl (one JSON line
# per measurement, and one per part that did not run, saying why), log.txt (everything).
#
#   bash bench/gpu_check.sh [--cpu-smoke] [--dry-run] [--math] [--no-vllm-install]
#     --cpu-smoke        every part at toy size on the CPU (what tests/test_gpu_check.py runs)
#     --dry-run          print the commands it would run, run nothing
#     --math             also run part 4 (needs .whl as below where gymnasium is missing)
#     --no-vllm-install  never pip install vLLM
# Where the image lacks gymnasium and friends, carry their wheels in .whl (echo /.whl/ >>
# .git/info/exclude; run with carry=[".whl"]):  python3 -m pip download --no-deps --only-binary=:all:
#   --python-version 3.12 --implementation cp --platform manylinux2014_x86_64 -d .whl gymnasium
#   farama-notifications docker fastapi starlette pydantic pydantic-core typing-inspection
#   annotated-types uvicorn
set -uo pipefail
cd "$(dirname "$0")/.."
SMOKE=""; DRY=""; MATH=""; INSTALL=1
for a in "$@"; do
  case "$a" in
    --cpu-smoke) SMOKE=1 ;;
    --dry-run) DRY=1 ;;
    --math) MATH=1 ;;
    --no-vllm-install) INSTALL="" ;;
    -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "gpu_check.sh: unknown option $a (see --help)" >&2; exit 2 ;;
  esac
done
OUT=${OUT:-gpu_results}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
PY=${PYTHON:-python3}
START=$(date +%s)
BUDGET=${GPU_CHECK_SECONDS:-570}
elapsed() { echo $(( $(date +%s) - START )); }
left() { echo $(( BUDGET - $(elapsed) )); }
note() { echo "{\"part\": \"$1\", \"skipped\": \"$2\"}" | tee -a "$OUT/timings.jsonl"; }
# run SECONDS CMD...: the command under `timeout`, its JSON lines into timings.jsonl
run() {
  local limit=$1; shift
  if [ -n "$DRY" ]; then echo "would run (timeout ${limit}s): $*"; return 0; fi
  if [ "$(left)" -lt 20 ]; then note "$*" "no time left in the ${BUDGET}s budget"; return 0; fi
  [ "$limit" -gt "$(left)" ] && limit=$(left)
  timeout "$limit" "$@" 2>>"$OUT/log.txt" | tee -a "$OUT/log.txt" | grep --line-buffered '^{' \
    | tee -a "$OUT/timings.jsonl"
  local rc=${PIPESTATUS[0]}
  [ "$rc" -ne 0 ] && note "$*" "exit $rc (124: timed out); see log.txt"
  return 0
}
FLAG=(); [ -n "$SMOKE" ] && FLAG=(--cpu-smoke)

if [ -z "$DRY" ]; then
  if ! $PY -c "import gymnasium" 2>/dev/null && ls .whl/*.whl >/dev/null 2>&1; then
    $PY -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
  fi
  $PY -c "import mentorgym" 2>/dev/null \
    || $PY -m pip install -q --no-deps --no-build-isolation --no-index -e . 2>&1 | grep -i error
  { nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no GPU (nvidia-smi absent)"
    $PY -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
  } | tee "$OUT/gpu.txt"
fi

echo "== 0. vLLM [$(elapsed)s]"
PIP_PID=""
have_vllm() { $PY -c "import vllm" 2>/dev/null; }
HAVE_VLLM=""; [ -z "$DRY" ] && have_vllm && HAVE_VLLM=1
if [ -n "$HAVE_VLLM" ]; then
  echo "vllm present"
elif [ -n "$SMOKE" ] || [ -z "$INSTALL" ]; then
  note "vllm install" "vllm absent and not installed (--cpu-smoke or --no-vllm-install)"
elif [ -n "$DRY" ]; then
  echo "would run in the background: pip install vllm torch==<the image's torch>"
else
  # Against the image's own torch, so pip picks the vLLM built for it and never swaps torch;
  # short network timeouts, so a machine without PyPI learns that in seconds.
  TORCH_PIN="torch==$($PY -c 'import torch; print(torch.__version__.split("+")[0])')"
  ( timeout 300 $PY -m pip install -q --timeout 15 --retries 1 vllm "$TORCH_PIN" \
      >"$OUT/vllm_install.txt" 2>&1; echo "rc=$?" >>"$OUT/vllm_install.txt" ) &
  PIP_PID=$!
fi

echo "== 1. training MFU: eager, compile, fused kernels, packing [$(elapsed)s]"
run 220 $PY bench/train_step_mfu.py "${FLAG[@]}"

echo "== 2. OPD step split by part: sampler hf, then vllm [$(elapsed)s]"
run 120 $PY bench/opd_step.py --losses sampled --steps 2 "${FLAG[@]}"
if [ -n "$PIP_PID" ]; then
  wait "$PIP_PID"
  if have_vllm; then HAVE_VLLM=1; echo "vllm installed"; else
    note "vllm install" "pip install vllm failed: $(tail -c 300 "$OUT/vllm_install.txt" | tr '\n"' '  ')"
  fi
fi
if [ -n "$DRY" ] || [ -n "$HAVE_VLLM" ]; then
  run 200 $PY bench/opd_step.py --losses sampled --steps 2 --sampler vllm "${FLAG[@]}"
  echo "== 3. vllm: backend checks [$(elapsed)s]"
  if [ -z "$SMOKE" ]; then run 120 $PY bench/gpu_check_vllm.py; else
    note "gpu_check_vllm.py" "needs a CUDA GPU"; fi
else
  note "opd_step.py --sampler vllm" "vllm is not installed on this machine"
fi

if [ -n "$MATH" ]; then
  echo "== 4. distillation family on math with tools [$(elapsed)s]"
  MATH_ARGS=(--envs math --out runs/distill_compare_gpu --teacher-size small
             --methods grpo opd sod skill_sd opsd opsd_frozen dagger)
  if [ -n "$SMOKE" ]; then MATH_ARGS+=(--quick --seeds 1 --jobs 2); else
    MATH_ARGS+=(--jobs 16 --budget warm_episodes=256 warm_steps=300 teacher_iters=4
                teacher_episodes=256 teacher_steps=300 teacher_batch=64 teacher_lr=3e-3); fi
  run "$(left)" $PY bench/distill_compare.py "${MATH_ARGS[@]}"
fi
[ -z "$DRY" ] && ls -la "$OUT"
echo "done [$(elapsed)s]"
