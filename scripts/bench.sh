#!/usr/bin/env bash
# Run every benchmark and update docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python scripts/bench.py --write "$@"
.venv/bin/python scripts/bench_firstboot.py --write
