#!/usr/bin/env bash
# The heavy tests: real boots beyond CI's time budget — the A/B rollback after three failed boots; each example
# profile READY on its own vendor's twin (the SR650 V2 moving its state off its M.2 halves); an SD-booting box's
# second power-on finding its moved state; an HPE and a Lenovo unit burned in through libvirt two at a time; a
# burn-in interrupted by SIGINT leaving no twin; a zero-touch box powered on while its service is down, its spooled
# report delivered at the next power-on. Run after the README's test set-up; results go into the closing note.
# Usage: bash scripts/test-heavy.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
export OEMKIT_REQUIRE_CORE=1
exec .venv/bin/python -m pytest -m heavy -p no:cacheprovider "$@"
