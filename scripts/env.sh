# Sourced by scripts/demo.sh and scripts/test.sh: create or refresh ./.venv and install
# the project into it. Idempotent; a re-run only installs what changed.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${BMR_VENV:-$ROOT/.venv}"
PY="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
  echo "[env] creating $VENV" >&2
  "$PY" -m venv "$VENV"
fi
# shellcheck disable=SC1091
source "$VENV/bin/activate"
stamp="$VENV/.bmr-installed"
want="$(cat "$ROOT/pyproject.toml" "$ROOT/constraints.txt" 2>/dev/null | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "[env] installing bmr-compress and its dependencies into $VENV" >&2
  # pip's own notes about unreachable extra indexes are noise here; real errors still show
  _quiet() { "$@" 2> >(grep -v -E "Location .* is ignored|^\s*$" >&2); }
  # torch first, pinned: pip picks the CPU wheel on machines that carry one locally and
  # the default (CUDA on Linux) wheel elsewhere; the project's own range (torch>=2.4)
  # is then already satisfied and pulls nothing more.
  _quiet python -m pip install -q "torch==${BMR_TORCH_VERSION:-2.13.0}"
  _quiet python -m pip install -q -c "$ROOT/constraints.txt" -e "$ROOT[test]"
  echo "$want" > "$stamp"
fi
export PYTHONHASHSEED="${PYTHONHASHSEED:-0}"
