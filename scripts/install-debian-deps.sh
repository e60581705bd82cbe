#!/bin/sh
# Install the Debian packages the test suite uses, only when missing.
#   libpmem1  the pmem durability backend (loaded through ctypes)
#   fuse3     fusermount3 and libfuse3 for `daxfs mount` (mfusepy loads libfuse3)
# A failure here is reported, not fatal: the tests that need a package skip
# with a reason when it is absent.
need=""
for pkg in libpmem1 fuse3; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need="$need $pkg"
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
