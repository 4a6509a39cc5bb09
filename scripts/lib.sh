# Shared by the set-up scripts: install the Debian packages that are missing, quietly, once.
ensure_packages() {
    local sudo="" missing=() p
    [[ "$(id -u)" == 0 ]] || sudo="sudo"
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    ((${#missing[@]})) || return 0
    echo "setup: installing ${missing[*]}" >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}
