#!/bin/bash -e
# Install the boot-partition hand-over (token, config.toml) and a short guide makers see when they
# open the card on their computer. pi-gen runs this on the build host, in this directory.
install -v -m 755 files/sesame-pi-firstboot.sh "${ROOTFS_DIR}/usr/local/sbin/sesame-pi-firstboot"
install -v -m 644 files/sesame-pi-firstboot.service \
  "${ROOTFS_DIR}/etc/systemd/system/sesame-pi-firstboot.service"
install -v -m 644 files/sesame-pi-README.txt "${ROOTFS_DIR}/boot/firmware/sesame-pi-README.txt"

on_chroot <<EOF
systemctl enable sesame-pi-firstboot.service
EOF
