#!/bin/sh
# Two cold builds with separate, empty caches; prints wall time and compares the outputs byte for byte.
set -e
cd "$(dirname "$0")"
COMP=${1:-xz-bcj}
AGENT=${AGENT:-$PWD/agent-snapshot/hypervisor_core}
for n in 1 2; do
  rm -rf cache-cold$n out/cold$n
  /usr/bin/time -f "cold$n wall %e s" /usr/bin/python3 build.py --cache cache-cold$n --out out/cold$n --compress $COMP --agent "$AGENT"
done
/usr/bin/time -f "warm (no change) wall %e s" /usr/bin/python3 build.py --cache cache-cold1 --out out/warm --compress $COMP --agent "$AGENT"
sha256sum out/cold1/vmlinuz out/cold2/vmlinuz out/cold1/initrd.img out/cold2/initrd.img out/warm/initrd.img
cmp out/cold1/initrd.img out/cold2/initrd.img && echo "IDENTICAL initrd"
