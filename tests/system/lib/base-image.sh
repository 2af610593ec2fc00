#!/usr/bin/env bash
# Make sure the container base (Debian 13 "trixie", minbase) exists in the local engine, built from
# Debian's archive with debootstrap (no registry needed), and print its tag.
# Usage: base-image.sh [arm64|armv7]   (DOCKER: the client from dockerd.sh)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
arch="${1:-arm64}"
docker="${DOCKER:-docker}"

case "$arch" in
  arm64) debarch=arm64 ;;
  armv7) debarch=armhf ;;
  *) echo "base-image.sh: unknown arch '$arch' (arm64 or armv7)" >&2; exit 2 ;;
esac

tarball="$(ROOTFS_ARCH="$debarch" bash "$here/debian-rootfs.sh" minbase)"
# The tag names the tarball's key, so a changed package list gives a new base.
tag="sesame-pi/debian-base:trixie-$debarch-$(basename "$tarball" .tar | rev | cut -d- -f1 | rev)"
if ! "$docker" image inspect "$tag" >/dev/null 2>&1; then
  echo "base-image.sh: importing $tarball as $tag" >&2
  "$docker" import --platform "linux/$debarch" \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["/bin/bash"]' "$tarball" "$tag" >&2
fi
echo "$tag"
