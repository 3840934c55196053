#!/usr/bin/env bash
# Install arm-jax (CPU JAX) and what its tests need. Idempotent; safe to re-run.
#   bash scripts/setup.sh          # the package (editable) and its runtime dependencies
#   bash scripts/setup.sh --test   # also pytest, pytest-xdist, pyarrow and redis-server (for the Redis store tests)
set -euo pipefail
cd "$(dirname "$0")/.."

extras=""
if [[ "${1:-}" == "--test" ]]; then
  extras="[test]"
  if ! command -v redis-server >/dev/null 2>&1; then
    as_root=""
    if [[ "$(id -u)" != "0" ]] && command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
      as_root="sudo -n"       # a developer box with passwordless sudo
    fi
    if command -v apt-get >/dev/null 2>&1 && { [[ "$(id -u)" == "0" ]] || [[ -n "$as_root" ]]; }; then
      echo "setup: installing redis-server (Debian package) for the store tests"
      $as_root apt-get update -qq >/dev/null && \
        $as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
    else
      echo "setup: redis-server not found and cannot apt-get install it (needs apt-get and root or passwordless sudo); Redis tests will be skipped" >&2
    fi
  fi
fi
python -m pip install -q --disable-pip-version-check -e ".${extras}"
