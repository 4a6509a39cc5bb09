#!/usr/bin/env bash
# The heavy tests: real boots beyond CI's time budget (the A/B rollback after three failed boots, each example
# profile READY on its own vendor's twin). Run after the README's test set-up; results go into the closing note.
# Usage: bash scripts/test-heavy.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
export OEMKIT_REQUIRE_CORE=1
exec .venv/bin/python -m pytest -m heavy -p no:cacheprovider "$@"
