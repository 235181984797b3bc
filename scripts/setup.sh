#!/usr/bin/env bash
# Create .venv with graphgt installed (editable). Usage: bash scripts/setup.sh [--dev]
#   --dev   also install the test/optional tools (pytest, wandb, rdkit, matplotlib, the Slurm
#           launcher and the Optuna sweeper: all from PyPI)
# torch: on a machine without an NVIDIA GPU the CPU build is installed (never a multi-GB CUDA
# build); with a GPU the default (CUDA) build. Override with TORCH_SPEC="torch==X" / TORCH_INDEX=URL.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PIP=".venv/bin/python -m pip"
export PIP_DISABLE_PIP_VERSION_CHECK=1
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  if [ -n "${TORCH_INDEX:-}" ]; then
    $PIP install -q --no-deps --index-url "$TORCH_INDEX" "$TORCH_SPEC"
  elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    $PIP install -q --no-deps "$TORCH_SPEC"
  else
    $PIP install -q --no-deps --retries 0 --timeout 10 --index-url https://download.pytorch.org/whl/cpu "$TORCH_SPEC" 2>/dev/null \
      || $PIP install -q --no-deps "$TORCH_SPEC"
  fi
fi
EXTRA=""
[ "${1:-}" = "--dev" ] && EXTRA="[dev]"
$PIP install -q -e ".$EXTRA"
.venv/bin/python -c "import torch, torch_geometric, graphgt; print('graphgt', graphgt.__version__, '| torch', torch.__version__, '| PyG', torch_geometric.__version__)"
