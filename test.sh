#!/usr/bin/env bash
# Run Observatory's test suite (sets up .venv/ first when needed). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")"
./setup.sh --for-tests
exec .venv/bin/python -m pytest -q "$@"
