#!/usr/bin/env bash
# Install what ocp-bundler's tests and demo need on a Debian/Ubuntu machine (idempotent).
#   - docker-registry, skopeo, apache2-utils (htpasswd): real registries and an independent digest oracle
#   - podman, runc, busybox-static: the Quay bring-up, with stand-in images built locally
#   - a real Project Quay 3.18 from ../shared/quay (install.sh: PostgreSQL, Redis, a venv in /tmp)
#   - the package itself (editable) with its test extras
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
for pair in docker-registry:docker-registry skopeo:skopeo htpasswd:apache2-utils podman:podman runc:runc busybox:busybox-static sqlite3:sqlite3; do
  bin=${pair%%:*}; pkg=${pair#*:}
  command -v "$bin" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}" >&2
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

# podman on these machines: crun fails and default rlimits cannot be raised; runc with explicit limits works.
if [ ! -f /etc/containers/containers.conf ] || ! grep -q 'runtime = "runc"' /etc/containers/containers.conf; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO mkdir -p /etc/containers
  printf '[containers]\ndefault_ulimits = ["nofile=4096:4096", "nproc=4096:4096"]\n[engine]\nruntime = "runc"\n' | $SUDO tee /etc/containers/containers.conf >/dev/null
fi

quay_log=$(mktemp)
if ! bash ../shared/quay/install.sh >"$quay_log" 2>&1; then
  tail -30 "$quay_log" >&2
  echo "real Quay install failed: see bash ../shared/quay/install.sh" >&2
  exit 1
fi
rm -f "$quay_log"
python3 -m pip install -q -e ".[test]" 2>&1 | grep -v -i "warning: running pip as" || true
