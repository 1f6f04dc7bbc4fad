#!/usr/bin/env bash
# Set up Observatory in .venv/ (idempotent), then run the main job on the default store.
#   ./setup.sh                  set up, then run the main job (observatory demo)
#   ./setup.sh --no-run         set up only
#   ./setup.sh --for-tests      set up only, plus what the tests need beyond the project (the `scale`
#                               extra: Ray and submitit for the cluster executors' tests; a headless
#                               browser for the dashboard's browser tests; used by ./test.sh)
set -euo pipefail
cd "$(dirname "$0")"

stamp=.venv/.installed
if [ ! -x .venv/bin/observatory ] || [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "setting up .venv/ (pinned dependencies; about 2 minutes on a fresh machine)" >&2
  [ -x .venv/bin/python ] || python3 -m venv .venv
  # torch==2.13.0 is pinned with everything that depends on it: the CPU wheel on this disk.
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[test]' 2>&1 | grep -v '^WARNING: Location' >&2 || true
  .venv/bin/python -c "import torch, duckdb, diffusers, transformers, streamlit" # fail loudly if the install did not take
  touch "$stamp"
fi

case "${1:-}" in
  --no-run) exit 0 ;;
  --for-tests)
    # The cluster executors (Ray, submitit) and the DuckDB extensions: pinned in the `scale` extra.
    scale_stamp=.venv/.installed-scale
    if [ ! -f "$scale_stamp" ] || [ pyproject.toml -nt "$scale_stamp" ]; then
      echo "installing the scale extra for the tests (Ray, submitit)" >&2
      .venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[test,scale]' 2>&1 | grep -v '^WARNING: Location' >&2 || true
      .venv/bin/python -c "import ray, submitit" # fail loudly if the install did not take
      touch "$scale_stamp"
    fi
    # Headless Chromium (Debian's package) for the dashboard's browser tests: only the test
    # command installs it, never the main job.
    chromium="${OBSERVATORY_CHROMIUM:-/usr/bin/chromium}"
    if [ ! -x "$chromium" ] && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
      echo "installing Debian's chromium for the dashboard's browser tests" >&2
      { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } >/dev/null 2>&1 \
        || echo "could not install chromium: the browser tests will be skipped" >&2
    fi
    exit 0 ;;
esac
exec .venv/bin/observatory demo
