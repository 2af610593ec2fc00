#!/usr/bin/env bash
# Write pi-gen's configuration for one build: image/config plus this build's values, mode 0600
# (it holds the admin password). build.sh runs it; tests/unit/test_image_config.py checks it
# against pi-gen's own rules.
# Usage: SESAME_PI_FIRST_USER_PASS=... [SESAME_PI_SSH_PUBKEY=...] [SESAME_PI_WIFI_COUNTRY=..]
#        pi-gen-config.sh OUT
# With a key: SSH on, key logins only. Without one: SSH off (Raspberry Pi Imager turns it on with
# the maker's key), and no key-only rule, which pi-gen refuses without a key to go with it.
set -euo pipefail
out="${1:?usage: pi-gen-config.sh OUT}"
: "${SESAME_PI_FIRST_USER_PASS:?the admin password is needed}"
pubkey="${SESAME_PI_SSH_PUBKEY:-}"
# (Here, not in the block below: its output file is opened before the block's own umask applies;
# build.sh once wrote the password world-readable that way.)
umask 077
rm -f "$out"
{
  cat "$(dirname "$0")/config"
  printf '\n# Added by image/pi-gen-config.sh\n'
  if [[ -n "$pubkey" ]]; then
    printf 'ENABLE_SSH=1\nPUBKEY_ONLY_SSH=1\nPUBKEY_SSH_FIRST_USER=%q\n' "$pubkey"
  else
    printf 'ENABLE_SSH=0\nPUBKEY_ONLY_SSH=0\n'
  fi
  printf 'FIRST_USER_PASS=%q\n' "$SESAME_PI_FIRST_USER_PASS"
  if [[ -n "${SESAME_PI_WIFI_COUNTRY:-}" ]]; then
    printf 'WPA_COUNTRY=%q\n' "$SESAME_PI_WIFI_COUNTRY"
  fi
} >"$out"
