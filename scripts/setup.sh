#!/usr/bin/env bash
# Install arm-jax (CPU JAX) and what its tests need. Idempotent; safe to re-run.
#   bash scripts/setup.sh          # the package (editable) and its runtime dependencies
#   bash scripts/setup.sh --test   # also pytest, pytest-xdist and redis-server (for the Redis store tests)
set -euo pipefail
cd "$(dirname "$0")/.."

extras=""
if [[ "${1:-}" == "--test" ]]; then
  extras="[test]"
  if ! command -v redis-server >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1 && [[ "$(id -u)" == "0" ]]; then
      echo "setup: installing redis-server (Debian package) for the store tests"
      apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
    else
      echo "setup: redis-server not found and cannot apt-get install it; Redis tests will be skipped" >&2
    fi
  fi
fi
python -m pip install -q --disable-pip-version-check -e ".${extras}"
