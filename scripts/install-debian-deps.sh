#!/bin/sh
# Install the Debian packages the test suite needs, only when missing.
# libpmem1: the pmem durability backend (loaded through ctypes).
set -e
need=""
for pkg in libpmem1; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need="$need $pkg"
done
[ -z "$need" ] && exit 0
if [ "$(id -u)" != 0 ]; then
    echo "missing Debian packages:$need (run as root or install them; tests needing them skip)" >&2
    exit 0
fi
apt-get update -qq >/dev/null && apt-get install -y -qq $need >/dev/null
