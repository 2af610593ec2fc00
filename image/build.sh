#!/usr/bin/env bash
# `make image`: the sesame-pi SD card image, Raspberry Pi OS Lite (Debian 13 "trixie", arm64) plus
# image/stage-sesame, built by pi-gen in Docker. Output: build/image/*.img.xz.
#
# Needs: internet (GitHub for pi-gen, Docker Hub for its debian:trixie base, the Raspberry Pi and
# Debian archives, PyPI), a Docker engine that may run --privileged containers with a bridge
# network, qemu-user-static with binfmt_misc on a non-arm64 host, root, about 10 GB of
# free disk (pi-gen keeps a full root file system per stage) and about an hour on 2 cores (the
# arm64 packages run under qemu; pi-gen and its apt downloads dominate).
#
# Environment:
#   SESAME_PI_SSH_PUBKEY       authorized_keys line(s) for sesame-admin (or ..._FILE), for a
#                              fleet's own image. Without one SSH is off in the image: a maker
#                              turns it on with their own key in Raspberry Pi Imager. Never bake a
#                              key into an image you publish: its holder would be root on every
#                              Pi flashed with it.
#   SESAME_PI_SSH_PUBKEY_FILE  a file holding them, e.g. ~/.ssh/id_ed25519.pub
#   SESAME_PI_ADMIN_PASSWORD   sesame-admin's password (default: random, kept in
#                              build/image/admin-password, mode 0600, never printed)
#   SESAME_PI_WIFI_COUNTRY     two-letter Wi-Fi regulatory domain, e.g. GB (optional)
#   SESAME_PI_IMAGE_VARS       a YAML file of Ansible variables for the image's roles, e.g.
#                              audio_card or sesame_pi_button_pull for one HAT (optional; anything
#                              in it ends up in the image, so no tokens)
#   SKIP_APP_BUILD=1           reuse build/sesame-pi-arm64.tar instead of `SAVE=1 make container`
#   PI_GEN_REPO, PI_GEN_COMMIT override the pinned pi-gen; CONTINUE=1, PRESERVE_CONTAINER=1 and
#   PIGEN_DOCKER_OPTS pass through to pi-gen's build-docker.sh (see its README).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
out="$repo/build/image"
pigen="$repo/build/pi-gen"

# pi-gen's arm64 branch builds 64-bit Raspberry Pi OS; its master branch builds the 32-bit
# (armhf) one. This commit is the arm64 branch's head as read from a mirror on 2026-11-25
# ("Merge branch 'master' into arm64", 2026-06-16). GitHub was unreachable where this script was
# written, so it has not been cloned from there: CHECK AND UPDATE the pin before relying on it
# (git ls-remote https://github.com/RPi-Distro/pi-gen.git refs/heads/arm64).
PI_GEN_REPO="${PI_GEN_REPO:-https://github.com/RPi-Distro/pi-gen.git}"
PI_GEN_COMMIT="${PI_GEN_COMMIT:-ca8aeed0ae300c2a89f55ce9617d5f96a27e99e5}"

say() { echo "image: $*" >&2; }
die() {
  say "$*"
  exit 1
}

pubkey="${SESAME_PI_SSH_PUBKEY:-}"
if [[ -z "$pubkey" && -n "${SESAME_PI_SSH_PUBKEY_FILE:-}" ]]; then
  pubkey="$(cat "$SESAME_PI_SSH_PUBKEY_FILE")"
fi
if [[ -n "$pubkey" ]]; then
  [[ "$pubkey" == ssh-* || "$pubkey" == ecdsa-* || "$pubkey" == sk-* ]] ||
    die "SESAME_PI_SSH_PUBKEY (or the file SESAME_PI_SSH_PUBKEY_FILE names) is no SSH public key"
else
  say "no SSH key given: SSH is off in this image (Raspberry Pi Imager turns it on with a key)"
fi
[[ "$(id -u)" == 0 ]] ||
  die "run as root (sudo make image): the app image's base is debootstrapped, and pi-gen needs root"
command -v git >/dev/null || die "git is needed to fetch pi-gen"
# pi-gen builds and runs its container on Docker's default bridge network. The engine the tests
# start by themselves has none (--bridge=none), so this one must be the system's, already up.
docker info >/dev/null 2>&1 || die "no Docker engine answers: start it (systemctl start docker)"
docker network inspect bridge >/dev/null 2>&1 ||
  die "this Docker engine has no bridge network, which pi-gen's build needs (one started with --bridge=none, as the tests do): stop it and start the system's (systemctl start docker)"
mkdir -p "$out"
start=$SECONDS

# 1. The app image, saved for `docker load` at first boot.
app_tarball="$repo/build/sesame-pi-arm64.tar"
if [[ "${SKIP_APP_BUILD:-0}" != 1 ]]; then
  say "building the app image (SAVE=1 ARCH=arm64 app/container/build.sh)"
  SAVE=1 ARCH=arm64 bash "$repo/app/container/build.sh" >/dev/null
fi
[[ -s "$app_tarball" ]] || die "no $app_tarball; run without SKIP_APP_BUILD=1"

# 2. pi-gen at the pinned commit (kept between builds; fetched again only when the pin changes).
if [[ "$(git -C "$pigen" rev-parse HEAD 2>/dev/null)" != "$PI_GEN_COMMIT" ]]; then
  say "fetching pi-gen $PI_GEN_COMMIT from $PI_GEN_REPO"
  rm -rf "$pigen"
  git init -q "$pigen"
  git -C "$pigen" fetch -q --depth 1 "$PI_GEN_REPO" "$PI_GEN_COMMIT"
  git -C "$pigen" checkout -q --detach FETCH_HEAD
fi

# 3. Our stage, the Ansible playbook and the app image inside pi-gen; only our stage exports.
bash "$repo/image/assemble-stage.sh" "$pigen/stage-sesame" "$app_tarball" >/dev/null
touch "$pigen/stage2/SKIP_IMAGES"

# 4. The configuration with this build's values, outside pi-gen's directory so the password never
# lands in its Docker image (build-docker.sh mounts the file read-only as /config).
password_file="$out/admin-password"
if [[ -n "${SESAME_PI_ADMIN_PASSWORD:-}" ]]; then
  password="$SESAME_PI_ADMIN_PASSWORD"
  rm -f "$password_file"
else
  password="$(head -c 24 /dev/urandom | base64 | tr -d '/+=')"
  (umask 077 && printf '%s\n' "$password" >"$password_file")
fi
config="$out/pi-gen.config"
SESAME_PI_FIRST_USER_PASS="$password" SESAME_PI_SSH_PUBKEY="$pubkey" \
  bash "$repo/image/pi-gen-config.sh" "$config"

# 5. pi-gen, in its Docker container. The result is copied out to $pigen/deploy.
# On a non-arm64 host its build-docker.sh looks for `qemu-aarch64` on the PATH, which Debian's and
# Ubuntu's qemu-user-static install as qemu-aarch64-static only: a shim gives it that name (the
# static binary: binfmt's F flag opens it at registration, so it also works inside the container).
case "$(uname -m)" in
  aarch64 | arm64) ;;
  *)
    if ! command -v qemu-aarch64 >/dev/null; then
      static="$(command -v qemu-aarch64-static)" ||
        die "qemu-aarch64-static not found: install qemu-user-static (and binfmt-support)"
      mkdir -p "$repo/build/qemu-shim"
      ln -sf "$static" "$repo/build/qemu-shim/qemu-aarch64"
      PATH="$repo/build/qemu-shim:$PATH"
    fi
    ;;
esac
say "running pi-gen (about an hour; log in $pigen/deploy/build-docker.log)"
rm -rf "$pigen/deploy"
(cd "$pigen" && CONTAINER_NAME="${CONTAINER_NAME:-sesame-pi-gen}" ./build-docker.sh -c "$config")

shopt -s nullglob
images=("$pigen"/deploy/*sesame-pi*.img.xz)
((${#images[@]})) || die "pi-gen finished without an .img.xz in $pigen/deploy"
cp "$pigen"/deploy/*sesame-pi* "$out/"
# Raspberry Pi Imager 2 customises (Wi-Fi, user, SSH) only an image its OS list describes.
for image in "${images[@]}"; do
  python3 "$repo/image/imager-manifest.py" "$out/$(basename "$image")" \
    "$out/$(basename "$image" .img.xz).rpi-imager.json" >&2
done
say "built in $(((SECONDS - start) / 60)) min:"
for image in "${images[@]}"; do
  echo "$out/$(basename "$image")"
done
