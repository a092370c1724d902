# Sourced by scripts/demo.sh and scripts/test.sh: create or refresh ./.venv and install
# the project into it. Idempotent; a re-run only installs what changed.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${BMR_VENV:-$ROOT/.venv}"
CONSTRAINTS="$ROOT/constraints.txt"
EXTRA=()
if [ "${BMR_TRANSFORMERS:-5}" = 4 ]; then
  # the transformers 4.x set (constraints-transformers4.txt), with optimum-onnx for
  # sentence-transformers' ONNX backend (it needs transformers<4.58), in its own venv
  VENV="${BMR_VENV:-$ROOT/.venv-transformers4}"
  CONSTRAINTS="$ROOT/constraints-transformers4.txt"
  EXTRA=("optimum-onnx[onnxruntime]")
fi
PY="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
  echo "[env] creating $VENV" >&2
  "$PY" -m venv "$VENV"
fi
# shellcheck disable=SC1091
source "$VENV/bin/activate"
stamp="$VENV/.bmr-installed"
want="$(cat "$ROOT/pyproject.toml" "$CONSTRAINTS" 2>/dev/null | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "[env] installing bmr-compress and its dependencies into $VENV" >&2
  # pip's own notes about unreachable extra indexes are noise here; real errors still show
  _quiet() { "$@" 2> >(grep -v -E "Location .* is ignored|^\s*$" >&2); }
  # torch first, pinned: pip picks the CPU wheel on machines that carry one locally and
  # the default (CUDA on Linux) wheel elsewhere; the project's own range (torch>=2.4)
  # is then already satisfied and pulls nothing more.
  _quiet python -m pip install -q "torch==${BMR_TORCH_VERSION:-2.13.0}"
  _quiet python -m pip install -q -c "$CONSTRAINTS" -e "$ROOT[test]" ${EXTRA[@]+"${EXTRA[@]}"}
  echo "$want" > "$stamp"
fi
export PYTHONHASHSEED="${PYTHONHASHSEED:-0}"
