#!/usr/bin/env bash
# The whole ocp-bundler journey on built-in synthetic content, with no internet:
# loopback source registry → pack (signed) → verify → target registry → unpack → report + cluster resources.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
export BUNDLER_FIXTURES="${BUNDLER_FIXTURES:-$(cd .. && pwd)/shared/fixtures}"
exec python3 scripts/demo.py "$@"
