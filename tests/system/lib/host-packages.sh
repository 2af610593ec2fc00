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
missing=()
for pkg in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]} == 0)); then
  echo "host-packages: all present"
  exit 0
fi
echo "host-packages: installing ${missing[*]}"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
