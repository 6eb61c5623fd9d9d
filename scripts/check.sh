#!/usr/bin/env bash
# Install procshare with its test dependencies into .venv, then lint, type-check and test.
# This is the README's test command; CI (.ci/run) runs it on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[test]"
.venv/bin/ruff check src tests benchmarks examples
.venv/bin/ruff format --check src tests benchmarks examples
.venv/bin/mypy
.venv/bin/python -m pytest "$@"
