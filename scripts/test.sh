#!/usr/bin/env bash
# The test command: install what the tests need, then run the whole suite against real registries,
# skopeo and podman. Missing tools fail the run instead of skipping (OCPB_REQUIRE_TOOLS=1).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
export OCPB_REQUIRE_TOOLS=1
exec python3 -m pytest -q "$@"
