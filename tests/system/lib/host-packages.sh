#!/usr/bin/env bash
# The build host's packages for the system suites, in one apt run: debootstrap and qemu-user for
# the arm64 roots, Docker, rsync and the FAT and ext4 tools for the image, qemu-system for the
# boot test. CI runs this before suites run side by side, so none of them waits on dpkg's lock;
# each suite still installs what it lacks when run alone.
set -euo pipefail

packages=(
  debootstrap qemu-user-static binfmt-support         # arm64 roots (tests/system/lib/debian-rootfs.sh)
  docker.io containerd runc iptables                  # the engine (tests/system/lib/dockerd.sh)
  rsync fusefat mtools dosfstools fdisk e2fsprogs     # the image stage and the card (tests/support/pi_stage.py)
  qemu-system-arm                                     # the boot test (qemu-system-aarch64)
)
exec bash "$(dirname "$0")/../../../app/scripts/install-system-deps.sh" "${packages[@]}"
