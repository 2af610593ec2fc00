#!/bin/bash -e
# pi-gen runs this before the sub-stages: start from stage2's (Raspberry Pi OS Lite) root file
# system unless this stage's copy already exists (a CONTINUE=1 rebuild keeps it).
if [ ! -d "${ROOTFS_DIR}" ]; then
  copy_previous
fi
