#!/usr/bin/env bash
# The main job so far, end to end with the real CLI: show the catalog, tell real servers apart by what they report
# about themselves (each dump copied to a neutral name: identify reads content, not names), check an example
# appliance profile with its site overlay, see how a mistake is reported, then seal a unit config for one serial,
# preview its first boot on a real server's dump, and run the real first-boot agent against libvirt's test driver;
# then build the embedded core and the unit's signed appliance image, and boot it on its hardware's twin under
# Secure Boot (needs root, like the set-up).
set -uo pipefail
cd "$(dirname "$0")/.."
oemkit=".venv/bin/oemkit"
samples="tests/data/dmi"
work=$(mktemp -d)
serve_pid=""
trap '[ -n "$serve_pid" ] && kill "$serve_pid" 2>/dev/null; rm -rf "$work"' EXIT

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; echo "(exit $?)"; }

step "$oemkit" catalog list
cp "$samples/dell/PowerEdge-R650/AF241F438036.txt" "$work/unit-0001.txt"
cp "$samples/lenovo/ThinkSystem-SR650-7X06CTO1WW/447F1CAA9701.txt" "$work/unit-0002.txt"
cp "$samples/hpe/ProLiant-DL360-Gen10-Plus/6004A3CDB655.txt" "$work/unit-0003.txt"
cp "$samples/other/EliteDesk-800-G3-SFF/13C26AA19F39.txt" "$work/unit-0004.txt"
step "$oemkit" catalog identify "$work/unit-0001.txt"
step "$oemkit" catalog identify --json "$work/unit-0002.txt"
step "$oemkit" catalog identify "$work/unit-0003.txt"
step "$oemkit" catalog identify "$work/unit-0004.txt"   # a desktop: not in the catalog, exit 1
step "$oemkit" catalog show hpe-proliant-dl360-gen10-plus

step "$oemkit" profile validate profiles/retail-branch.yaml --site profiles/sites/retail-muc02.yaml --serial J30ABC12
step "$oemkit" profile show profiles/retail-branch.yaml --site profiles/sites/retail-muc02.yaml --origin
step "$oemkit" profile validate tests/data/profiles/broken/site-breaks-capacity.yaml \
    --site tests/data/profiles/broken/site-breaks-capacity.site.yaml   # exit 1: located in the site file

step "$oemkit" keys init --dir "$work/keys" --secure-boot --org "Northwind Retail Systems"
step "$oemkit" compile profiles/retail-branch.yaml --site profiles/sites/retail-ber01.yaml --serial J30ABC12 \
    --key "$work/keys/signing.key" -o "$work/J30ABC12.json"
step "$oemkit" firstboot preview "$work/J30ABC12.json" --pubkey "$work/keys/signing.pub" --facts "$work/unit-0001.txt"
step "$oemkit" facts from-dmi "$work/unit-0001.txt" --serial J30ABC12 -o "$work/box"
step "$oemkit" firstboot run "$work/J30ABC12.json" --pubkey "$work/keys/signing.pub" --facts "$work/box" \
    --root "$work/root"

# The embedded core: build it from Debian packages with this factory's key (cached: minutes the first time, seconds
# after) and see what takes the space. Then the appliance: the factory's Secure Boot keys enrolled in the twin's
# firmware store, the unit's disk image (signed systemd-boot and two banks of the core's signed UKI on the ESP, the
# sealed config on its own partition), booted as the box boots it — OVMF with Secure Boot, a TPM, the R650's twin as
# a libvirt domain (printed first) — to READY with the PCR 15 the factory predicted; the order burned in (every unit
# booted on its twin, a report and JUnit); then the same image on an HPE box, which the agent must refuse.
step "$oemkit" core build -o "$work/core" --pubkey "$work/keys/signing.pub"
step "$oemkit" core footprint "$work/core"
step "$oemkit" keys enroll-vars --dir "$work/keys" -o "$work/keys/VARS.fd"
step "$oemkit" image build "$work/J30ABC12.json" --core "$work/core" --keys "$work/keys" -o "$work/out"
step "$oemkit" twin xml "$work/out/J30ABC12" --accel tcg
step "$oemkit" boot "$work/out/J30ABC12" --vars "$work/keys/VARS.fd" --log "$work/console.txt"
step "$oemkit" burnin "$work/out" --vars "$work/keys/VARS.fd" --junit "$work/burnin.xml" --force
step "$oemkit" image verify "$work/out/J30ABC12" --keys "$work/keys"
step "$oemkit" boot "$work/out/J30ABC12" --vars "$work/keys/VARS.fd" --as-model hpe-proliant-dl360-gen10-plus \
    --json   # exit 1: the identity check refuses it, nothing applied

# Zero-touch (docs/zero-touch.md): the provisioning service on this machine (SQLite, HTTPS with a certificate from
# the tests' service CA, the CA the lab branch profile pins), a two-unit order built and then registered by the line
# (each unit's enrolment token written beside its signed config), one box booted as the branch boots it — its
# management port reaching the service through the address its config names — which enrols and reports READY; the
# fleet as the central team's scripts read it. The fleet page is at the same URL in a browser (user any, password
# the admin token).
step "$oemkit" keys service-cert --dir tests/data/keys -o "$work/tls" --host 10.0.2.100 --host 127.0.0.1
OEMKIT_ADMIN_TOKEN=$(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')
export OEMKIT_ADMIN_TOKEN
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$oemkit" serve --db "sqlite:///$work/fleet.db" --port "$port" --tls-cert "$work/tls/server.pem" \
    --tls-key "$work/tls/server.key" > "$work/serve.log" 2>&1 &
serve_pid=$!
fleet() {  # GET with the admin token, through the pinned CA (as `curl --cacert ... -H "Authorization: Bearer ..."`)
    python3 - "https://127.0.0.1:$port$1" <<'PY'
import json, os, ssl, sys, urllib.request
ctx = ssl.create_default_context(cafile="tests/data/keys/service-ca.pem")
req = urllib.request.Request(sys.argv[1], headers={"Authorization": "Bearer " + os.environ["OEMKIT_ADMIN_TOKEN"]})
print(json.dumps(json.load(urllib.request.urlopen(req, context=ctx, timeout=10)), indent=1))
PY
}
for _ in $(seq 100); do fleet /healthz > /dev/null 2>&1 && break; sleep 0.2; done
head -n 1 "$work/serve.log"
zt="$PWD/tests/data/profiles/zero-touch"  # the order's paths: relative to the CSV, so absolute here
printf 'serial,profile,site\nJ30ZTR01,%s\nJ30ZTR02,%s\n' "$zt/zt-branch.yaml,$zt/sites/zt-lab.yaml" \
    "$zt/zt-branch.yaml,$zt/sites/zt-lab.yaml" > "$work/zt-order.csv"
line=("$oemkit" line "$work/zt-order.csv" --core "$work/core" --key "$work/keys/signing.key" --keys "$work/keys"
    -o "$work/zt-out")
step "${line[@]}"   # built (a burn-in would run here: no rehearsal ever sees a token)
step "${line[@]}" --register "https://127.0.0.1:$port" --register-ca tests/data/keys/service-ca.pem
step "$oemkit" boot "$work/zt-out/J30ZTR01" --vars "$work/keys/VARS.fd" --qemu --service "$port" \
    --log "$work/zt-console.txt"
grep -E "oemkit-core: (config|phonehome)" "$work/zt-console.txt" | cut -c1-160
step fleet /v1/fleet
