#!/usr/bin/env bash
# `make container`: build the sesame-pi image for the Pi (ARCH=arm64 default, armv7 for 32-bit
# Raspberry Pi OS) with the local Docker engine, under qemu-user-static when the host differs.
# With no registry reachable, the Debian base is made from Debian's archive (see base-image.sh).
# SAVE=1 also writes build/sesame-pi-$ARCH.tar for `docker load` on a Pi or in the SD image.
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
arch="${ARCH:-arm64}"
lib="$repo/tests/system/lib"
# The base comes from debootstrap (a mounted chroot) and may need its own Docker engine: root's work.
if [[ "$(id -u)" != 0 ]]; then
  echo "container: run as root (sudo make container): the Debian base is made with debootstrap" >&2
  exit 1
fi

DOCKER="$(bash "$lib/dockerd.sh")"
export DOCKER
base="$(bash "$lib/base-image.sh" "$arch")"
version="$(sed -n 's/^version = "\(.*\)"/\1/p' "$repo/app/pyproject.toml")"
image="sesame-pi:$version-$arch"

# Behind a TLS-intercepting proxy, pip in the build stage must trust the proxy's CA as the host does.
extra_ca="$repo/app/container/extra-ca"
find "$extra_ca" -name '*.crt' -delete
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
  cp /usr/local/share/ca-certificates/*.crt "$extra_ca/"
fi

echo "container: building $image on $base" >&2
start=$SECONDS
"$DOCKER" build --network host --build-arg "BASE=$base" \
  -t "$image" -f "$repo/app/Dockerfile" "$repo/app" >&2
# The classic builder labels the image with the build host's platform; record the real one.
case "$arch" in
  arm64) python3 "$repo/app/container/set-arch.py" "$DOCKER" "$image" arm64 v8 ;;
  armv7) python3 "$repo/app/container/set-arch.py" "$DOCKER" "$image" arm v7 ;;
esac
"$DOCKER" tag "$image" "sesame-pi:latest-$arch"
echo "container: built $image in $((SECONDS - start)) s" >&2
if [[ "$arch" == "arm64" ]]; then
  "$DOCKER" tag "$image" sesame-pi:latest
fi
if [[ "${SAVE:-0}" == "1" ]]; then
  # A Pi runs `sesame-pi:latest` (compose.yaml and the Ansible role's sesame_pi_image), so the
  # arm64 tarball carries that tag too, or compose there would look for it in a registry. An
  # armv7 fleet sets sesame_pi_image to sesame-pi:latest-armv7.
  tags=("$image" "sesame-pi:latest-$arch")
  if [[ "$arch" == "arm64" ]]; then
    tags+=(sesame-pi:latest)
  fi
  mkdir -p "$repo/build"
  tarball="$repo/build/sesame-pi-$arch.tar"
  "$DOCKER" save -o "$tarball" "${tags[@]}"
  # docker writes it 0600 for whoever ran it (root, under `sudo SAVE=1 make container`): the
  # deploy, run as the owner with their own SSH keys, could not read it and failed on every Pi.
  chmod 0644 "$tarball"
  if [[ -n "${SUDO_UID:-}" ]]; then
    chown "$SUDO_UID:${SUDO_GID:-$SUDO_UID}" "$tarball"
  fi
  echo "container: saved $tarball" >&2
fi
echo "$image"
