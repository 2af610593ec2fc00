#!/usr/bin/env bash
# Put the image's pi-gen stage together in one directory: image/stage-sesame, the project's
# Ansible playbook and roles (00-ansible/files/ansible, with app/compose.yaml beside it in
# files/app/ where the sesame_pi role looks for it), the app image tarball
# (00-ansible/files/sesame-pi.tar) and, if SESAME_PI_IMAGE_VARS names a YAML file, extra Ansible
# variables for the image (00-ansible/files/image-vars.yml; e.g. audio_card for a HAT).
# build.sh hands the result to pi-gen; the image test runs it as pi-gen would: one layout.
# Usage: [SESAME_PI_IMAGE_VARS=vars.yml] assemble-stage.sh DEST APP_TARBALL   (DEST is replaced)
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
dest="${1:?usage: assemble-stage.sh DEST APP_TARBALL}"
tarball="${2:?usage: assemble-stage.sh DEST APP_TARBALL}"

if [[ ! -s "$tarball" ]]; then
  echo "assemble-stage: no app image tarball at $tarball (make it with: SAVE=1 make container)" >&2
  exit 1
fi
rm -rf "$dest"
mkdir -p "$(dirname "$dest")"
cp -a "$repo/image/stage-sesame" "$dest"
files="$dest/00-ansible/files"
mkdir -p "$files"
# Only what the play needs: ansible/ may also hold a fleet's inventory and vault, or logs fetched
# by collect-logs.yml (fleet-logs/), and pi-gen copies its whole directory into its Docker image.
mkdir -p "$files/ansible/group_vars"
cp -a "$repo/ansible/ansible.cfg" "$repo/ansible/site.yml" "$repo/ansible/roles" "$files/ansible/"
cp -a "$repo/ansible/group_vars/all.yml" "$files/ansible/group_vars/"
find "$files/ansible" \( -name '__pycache__' -o -name '*.retry' \) -prune -exec rm -rf {} +
mkdir -p "$files/app"
cp "$repo/app/compose.yaml" "$files/app/compose.yaml"
# The app's settings check, for the first boot's look at a config.toml on the card: the same
# modules the app loads its config with (the standard library is all they import).
check="$dest/01-firstboot/files/config-check/sesame_pi"
mkdir -p "$check"
cp "$repo"/app/src/sesame_pi/{__init__,config,settings_schema,textfile}.py "$check/"
if [[ -n "${SESAME_PI_IMAGE_VARS:-}" ]]; then
  cp "$SESAME_PI_IMAGE_VARS" "$files/image-vars.yml"
fi
# A hard link saves copying a few hundred megabytes when both sit on one file system.
ln -f "$tarball" "$files/sesame-pi.tar" 2>/dev/null || cp "$tarball" "$files/sesame-pi.tar"
echo "$dest"
