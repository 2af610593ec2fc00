#!/bin/bash -e
# Install the boot-partition hand-over (token, config.toml) and a short guide makers see when they
# open the card on their computer. pi-gen runs this on the build host, in this directory.
install -v -m 755 files/sesame-pi-firstboot.sh "${ROOTFS_DIR}/usr/local/sbin/sesame-pi-firstboot"
install -v -m 644 files/sesame-pi-firstboot.service \
  "${ROOTFS_DIR}/etc/systemd/system/sesame-pi-firstboot.service"
install -v -m 644 files/sesame-pi-README.txt "${ROOTFS_DIR}/boot/firmware/sesame-pi-README.txt"
# The app's settings check (assemble-stage.sh copies its modules here), so a config.toml the app
# would refuse stays on the card with a note instead of stopping the app at every start.
install -v -d -m 755 "${ROOTFS_DIR}/usr/local/lib/sesame-pi/sesame_pi"
install -v -m 644 files/config-check/sesame_pi/*.py "${ROOTFS_DIR}/usr/local/lib/sesame-pi/sesame_pi/"

on_chroot <<EOF
systemctl enable sesame-pi-firstboot.service
EOF
