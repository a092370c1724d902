#!/usr/bin/env bash
# Run the test suite (default tier; slow tests: scripts/test.sh -m slow).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$ROOT"
if [ "$#" -eq 0 ]; then set -- -m "not slow and not gpu"; fi
exec python -m pytest -q -p no:cacheprovider "$@"
