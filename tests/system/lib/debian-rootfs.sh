#!/usr/bin/env bash
# Build (once) and cache a Debian root file system for the Pi as a tarball; print the tarball's path.
#
# Usage: [ROOTFS_ARCH=arm64|armhf] debian-rootfs.sh minbase|pi [SUITE]
#   minbase  the smallest root (debootstrap --variant=minbase): the base of the container image.
#   pi       minbase plus what Raspberry Pi OS Lite has that our Ansible roles rely on
#            (systemd, udev, python3 for Ansible's chroot connection, sudo, ca-certificates), and
#            on arm64 Debian's kernel and initramfs standing in for the Pi's (the boot test boots
#            it under qemu-system-aarch64; the image and Ansible tests never run it).
# The cache lives in ${SESAME_PI_CACHE:-/var/cache/sesame-pi}/rootfs; the key is the suite, the
# variant and the package list, so changing the list rebuilds. A cold cache takes a few minutes
# (the second stage runs under qemu-user-static).
set -euo pipefail

variant="${1:?usage: debian-rootfs.sh minbase|pi [suite]}"
suite="${2:-trixie}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
cache="${SESAME_PI_CACHE:-/var/cache/sesame-pi}/rootfs"
arch="${ROOTFS_ARCH:-arm64}"
case "$arch" in
  arm64) qemu=aarch64 ;;
  armhf) qemu=arm ;;
  *) echo "debian-rootfs.sh: unknown ROOTFS_ARCH '$arch' (arm64 or armhf)" >&2; exit 2 ;;
esac

case "$variant" in
  minbase) include="" ;;
  pi)
    include="systemd,systemd-sysv,udev,dbus,python3,python3-apt,sudo,ca-certificates,iproute2,kmod,procps"
    if [[ "$arch" == "arm64" ]]; then
      include+=",linux-image-arm64,initramfs-tools,zstd"
    fi
    ;;
  *) echo "debian-rootfs.sh: unknown variant '$variant' (minbase or pi)" >&2; exit 2 ;;
esac

# This script's own text is in the key: a change to how the root is made (its debootstrap
# arguments, the mirror) makes a new one rather than reusing the old.
key="$( (printf '%s|%s|%s|' "$suite" "$variant" "$include"; cat "${BASH_SOURCE[0]}") |
  sha256sum | cut -c1-12)"
tarball="$cache/debian-$suite-$arch-$variant-$key.tar"
if [[ -s "$tarball" ]]; then
  echo "$tarball"
  exit 0
fi

need() { command -v "$1" >/dev/null 2>&1; }
if ! need debootstrap || ! [[ -e "/usr/bin/qemu-$qemu-static" || -e "/usr/bin/qemu-$qemu" ]]; then
  echo "debian-rootfs.sh: installing debootstrap and qemu-user-static" >&2
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap qemu-user-static binfmt-support >&2
fi
if ! [[ -e "/proc/sys/fs/binfmt_misc/qemu-$qemu" ]]; then
  mountpoint -q /proc/sys/fs/binfmt_misc || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
  update-binfmts --enable "qemu-$qemu" >&2 || true
fi
if ! [[ -e "/proc/sys/fs/binfmt_misc/qemu-$qemu" ]]; then
  echo "debian-rootfs.sh: binfmt_misc has no qemu-$qemu entry; cannot run $arch binaries here" >&2
  exit 1
fi

mkdir -p "$cache"
work="$(mktemp -d "$cache/.build-XXXXXX")"
trap 'rm -rf "$work"' EXIT
args=(--variant=minbase "--arch=$arch" --components=main)
[[ -n "$include" ]] && args+=("--include=$include")
echo "debian-rootfs.sh: debootstrap $suite $arch ($variant) into the cache; this takes a few minutes" >&2
debootstrap "${args[@]}" "$suite" "$work/root" "$mirror" >"$work/debootstrap.log" 2>&1 || {
  tail -n 30 "$work/debootstrap.log" >&2
  [[ -f "$work/root/debootstrap/debootstrap.log" ]] && tail -n 30 "$work/root/debootstrap/debootstrap.log" >&2
  exit 1
}
rm -rf "$work/root/var/cache/apt/archives/"*.deb "$work/root/var/lib/apt/lists/"*
tar --numeric-owner -C "$work/root" -cf "$tarball.part" .
mv "$tarball.part" "$tarball"
echo "$tarball"
