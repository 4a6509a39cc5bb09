#!/usr/bin/env bash
# Is the core reproducible? Two cold builds, each with its own empty cache, from one frozen copy of the agent and
# the init (the working tree may change while they run); prints each build's time and core id and compares every
# output file byte for byte. Exit 0: identical; 1: they differ; 2: a build failed. Needs root and the network.
#   sudo bash scripts/core-repro.sh [--compress xz|gzip|zstd] [--flavour amd64|cloud-amd64]
# Set KEEP=1 to keep the work folder (two caches of ~1 GB each) for a look at the differences.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d "${TMPDIR:-/var/tmp}/oemkit-core-repro.XXXXXX")
[[ "${KEEP:-0}" == 1 ]] || trap 'rm -rf "$work"' EXIT

mkdir -p "$work/frozen"
cp -r hypervisor_core "$work/frozen/"
find "$work/frozen" -name __pycache__ -prune -exec rm -rf {} +
cp oemkit/image/core/files/init "$work/frozen/"
[[ ! -f oemkit/image/core/files/inittab ]] || cp oemkit/image/core/files/inittab "$work/frozen/"  # taken from beside the init

for n in 1 2; do
    start=$(date +%s.%N)
    if ! .venv/bin/oemkit core build -o "$work/out$n" --cache "$work/cache$n" --pubkey tests/data/keys/signing.pub \
        --agent "$work/frozen/hypervisor_core" --init "$work/frozen/init" --budget-bytes 1000000000 --json "$@" \
        > "$work/build$n.json" 2> "$work/build$n.log"; then
        echo "core-repro: build $n failed:" >&2
        tail -n 20 "$work/build$n.log" >&2
        exit 2
    fi
    end=$(date +%s.%N)
    python3 - "$work/build$n.json" "$n" "$start" "$end" <<'PY'
import json, sys
doc = json.load(open(sys.argv[1]))
wall = float(sys.argv[4]) - float(sys.argv[3])
print(f"cold build {sys.argv[2]}: {wall:.1f} s, core {doc['core_id']}, {doc['compressed_bytes']:,} bytes; stages {doc['times']}")
PY
done

status=0
for f in vmlinuz initrd.img core.json footprint.json manifest.json; do
    if cmp -s "$work/out1/$f" "$work/out2/$f"; then
        echo "identical: $f $(sha256sum < "$work/out1/$f" | cut -c1-16)"
    else
        echo "DIFFERENT: $f" >&2
        status=1
    fi
done
[[ $status == 0 ]] && echo "core-repro: REPRODUCIBLE" || echo "core-repro: NOT REPRODUCIBLE (KEEP=1 to keep $work)" >&2
exit $status
