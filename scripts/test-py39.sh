#!/usr/bin/env bash
# The test suite once more on the oldest Python ocp-bundler supports (3.9, as on RHEL 8/9 hosts), in its own
# virtual environment, when this machine has a Python 3.9. Run by CI after scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
py39=""
for candidate in python3.9 "$HOME"/.pyenv/versions/3.9*/bin/python3.9; do
  if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c 'import sys; assert sys.version_info[:2] == (3, 9)' 2>/dev/null; then
    py39=$(command -v "$candidate"); break
  fi
done
if [ -z "$py39" ]; then
  echo "no Python 3.9 on this machine: the 3.9 run is left out" >&2
  exit 0
fi
venv=$(mktemp -d)/py39
"$py39" -m venv "$venv"
"$venv/bin/python" -m pip install -q -e ".[test]" 2>&1 | grep -v -i "notice\|warning" || true
export OCPB_REQUIRE_TOOLS=1
exec "$venv/bin/python" -m pytest -q -p no:cacheprovider "$@"
