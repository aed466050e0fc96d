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
# setuptools reports how it made the editable install as a warning it calls "InformationOnly"
# (a path finder maps envs/ to mentorgym.envs); that notice alone is filtered, nothing else.
PYTHONWARNINGS="ignore:Editable installation" python -m pip install -q -e ".[dev]" "$TORCH_PIN"
python -c "import mentorgym, torch; print(f'mentorgym {mentorgym.__version__} ready (torch {torch.__version__})')"
