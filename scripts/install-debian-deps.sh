#!/bin/sh
# Install the Debian packages the test suite uses, only when missing.
#   libpmem1  the pmem durability backend (loaded through ctypes)
#   fuse3     fusermount3 and libfuse3 for `daxfs mount` (mfusepy loads libfuse3)
#   rsync     one of the ordinary tools the FUSE tests drive through a mount
# A failure here is reported, not fatal: the tests that need a package skip
# with a reason when it is absent.
need=""
for pkg in libpmem1 fuse3 rsync; do
    # "install ok installed", not merely known to dpkg (a removed package keeps its config)
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
        || need="$need $pkg"
done
[ -z "$need" ] && exit 0
if [ "$(id -u)" != 0 ]; then
    echo "note: missing Debian packages:$need (not root; tests needing them will skip)" >&2
    exit 0
fi
echo "installing Debian packages:$need" >&2
if ! { apt-get update -qq >/dev/null && apt-get install -y -qq $need >/dev/null; }; then
    echo "warning: could not install$need; tests needing them will skip" >&2
fi
exit 0
