#!/bin/bash -e
# Provision the image exactly as `make deploy` provisions a running Pi: apply the project's Ansible
# playbook (ansible/site.yml) to this stage's root file system through Ansible's chroot connection.
# With sesame_pi_offline the roles install and enable units but start nothing (there is no running
# system in a chroot); the app image tarball is handed to the sesame_pi role, which puts it where
# sesame-pi-image-load.service loads it at first boot.
#
# pi-gen runs this on the build host (its Docker container), in this directory, with ROOTFS_DIR
# and WORK_DIR set. image/assemble-stage.sh puts the playbook in files/ansible, the image in
# files/sesame-pi.tar and optional extra variables in files/image-vars.yml; SESAME_PI_ANSIBLE_DIR,
# SESAME_PI_APP_TARBALL and SESAME_PI_IMAGE_VARS override them.
# Ansible: ANSIBLE_PLAYBOOK, else ansible-playbook on PATH, else a venv made in WORK_DIR from PyPI.
set -euo pipefail

ansible_dir="$(realpath "${SESAME_PI_ANSIBLE_DIR:-files/ansible}")"
app_tarball="$(realpath "${SESAME_PI_APP_TARBALL:-files/sesame-pi.tar}")"
image_vars="${SESAME_PI_IMAGE_VARS:-files/image-vars.yml}"
# The `ansible` bundle carries community.general (the chroot connection). Keep in step with the
# version the repository's lint tooling uses.
ansible_version="${SESAME_PI_ANSIBLE_VERSION:-12.3.0}"
image_tarball=/var/lib/sesame-pi/images/sesame-pi.tar

[[ -f "$ansible_dir/site.yml" ]] || { echo "00-ansible: no site.yml in $ansible_dir" >&2; exit 1; }
[[ -s "$app_tarball" ]] || { echo "00-ansible: app image tarball $app_tarball is missing" >&2; exit 1; }

find_ansible_playbook() {
  if [[ -n "${ANSIBLE_PLAYBOOK:-}" ]]; then
    echo "$ANSIBLE_PLAYBOOK"
  elif command -v ansible-playbook; then
    :  # (prints the path)
  else
    local venv="${WORK_DIR:?}/ansible-venv"
    if [[ ! -x "$venv/bin/ansible-playbook" ]]; then
      # pi-gen's build container is a bare Debian with no Python.
      # (Their output goes to stderr: this function's stdout is the path it finds.)
      if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
        apt-get update -qq >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
          python3 python3-venv >&2
      fi
      python3 -m venv "$venv" >&2
      "$venv/bin/pip" install --quiet "ansible==$ansible_version" >&2
    fi
    echo "$venv/bin/ansible-playbook"
  fi
}
playbook="$(find_ansible_playbook)"

# Mount /proc, /dev, /sys, /run and /tmp in the root as every chroot step of pi-gen has them
# (package scripts need them); pi-gen unmounts them when the stage ends. Ansible's chroot
# connection also needs the image's own Python.
on_chroot <<EOF
test -x /usr/bin/python3 || { echo "00-ansible: the image has no /usr/bin/python3 for Ansible" >&2; exit 1; }
EOF

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
# The root file system is the one host, in the group site.yml provisions. The inventory lives
# outside ansible/, so a fleet's inventory group_vars (its vault) stay out of the image.
cat >"$scratch/inventory.yml" <<EOF
sesame_pi:
  hosts:
    sesame-pi-image:
      ansible_host: "$ROOTFS_DIR"
      ansible_connection: community.general.chroot
      ansible_python_interpreter: /usr/bin/python3
      # Root already; sudo inside the chroot would only cost time under qemu (about 1 s a task).
      ansible_become: false
      # The image is made for the ReSpeaker 2-Mic HAT (the audio role's card), whose button pulls
      # GPIO 17 to ground: against the app's default pull every press acted as a release. The
      # build's image-vars.yml or a card's config.toml says otherwise.
      sesame_pi_button_pull: up
EOF
# JSON keeps true a boolean (a key=value pair would hand the roles the string "true"). Every
# secret is emptied here, as extra vars (which win over everything): ansible/group_vars and
# host_vars beside site.yml are still read, and a fleet's token kept there (its vault) would
# otherwise land on every card this builds.
cat >"$scratch/vars.json" <<EOF
{"sesame_pi_offline": true, "sesame_pi_image_tarball": "$app_tarball",
 "sesame_pi_token": "", "sesame_pi_token_file": "",
 "sesame_pi_refresh_token": "", "sesame_pi_refresh_token_file": "",
 "sesame_pi_auth_record": "", "sesame_pi_auth_record_file": ""}
EOF

extra=(-e "@$scratch/vars.json")
if [[ -f "$image_vars" ]]; then
  # Before vars.json: the image's own settings cannot switch offline mode off.
  extra=(-e "@$(realpath "$image_vars")" "${extra[@]}")
fi

echo "00-ansible: applying $ansible_dir/site.yml to $ROOTFS_DIR with $playbook"
(
  cd "$ansible_dir"
  ANSIBLE_CONFIG="$ansible_dir/ansible.cfg" ANSIBLE_RETRY_FILES_ENABLED=False \
    ANSIBLE_LOCAL_TEMP="$scratch/ansible-local" \
    "$playbook" -i "$scratch/inventory.yml" "${extra[@]}" site.yml
)

if ! cmp -s "$app_tarball" "${ROOTFS_DIR}${image_tarball}"; then
  echo "00-ansible: the playbook did not put the app image at $image_tarball" >&2
  exit 1
fi
# Ansible's remote temporary files are no part of the image.
rm -rf "${ROOTFS_DIR}/root/.ansible"
echo "00-ansible: done; the app image is at $image_tarball"
