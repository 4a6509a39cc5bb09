#!/bin/sh
# Runs inside the throwaway build chroot of `oemkit core build` (oemkit/image/core/rebuild.py drives it through
# mmdebstrap hooks, which mount /proc and /dev and remove everything afterwards).
#   rebuild.sh prepare SOURCE VERSION PROFILES   build dependencies, then the source unpacked in /build/SOURCE
#   rebuild.sh build SOURCE OPTIONS PROFILES     binary packages into /build/out
# Fixed paths and no inherited SOURCE_DATE_EPOCH: dpkg-buildpackage takes the date from debian/changelog, so the
# same source gives the same bytes whoever builds it and whenever.
set -eu
unset SOURCE_DATE_EPOCH
export LC_ALL=C.UTF-8 TZ=UTC HOME=/root DEBIAN_FRONTEND=noninteractive
umask 022
action=$1 src=$2
case "$action" in
prepare)
    version=$3 profiles=$4
    apt-get -q -y --no-install-recommends ${profiles:+-P "$profiles"} build-dep "$src=$version"
    mkdir -p "/build/dl-$src"
    cd "/build/dl-$src"
    apt-get -q -y --download-only source "$src=$version"
    dpkg-source --no-check -x ./*.dsc "/build/$src"
    ;;
build)
    options=$3 profiles=$4
    cd "/build/$src"
    DEB_BUILD_OPTIONS="$options parallel=$(nproc)" \
        dpkg-buildpackage -b -uc -us ${profiles:+-P"$profiles"}
    mkdir -p /build/out
    mv /build/*.deb /build/out/
    ;;
*)
    echo "rebuild.sh: unknown action $action" >&2
    exit 2
    ;;
esac
