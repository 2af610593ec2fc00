#!/bin/bash
# sesame-pi-firstboot: move what a maker dropped on the SD card's FAT boot partition into place.
#
# The boot partition is the only part of the card Windows and macOS can write, so a maker puts the
# sign-in there: <boot>/sesame-pi/auth.json (the auth record the README's browser snippet copies),
# or refresh_token (with firebase_api_key, unless config.toml gives the key), or an hour-long ID
# token (or token.txt, as Notepad saves it), and optionally config.toml. FAT has no owners or modes
# and anyone holding the card can read it, so this script moves each file into /etc/sesame-pi with
# the right owner and mode, then deletes the copy on FAT. auth.json goes there as a pending login,
# auth.pending.json: the app exchanges it at start with the same code as `sesame-pi login`
# (retrying until the network is up) and deletes it, or renames it auth.pending.json.refused with
# a log line saying why. It runs at every boot where <boot>/sesame-pi exists (the unit's condition), so a
# new token can be dropped at any time. The token's contents never reach the journal.
#
# Environment (for tests): BOOT_DIR (default /boot/firmware), ETC_DIR (default /etc/sesame-pi),
# SESAME_PI_UID / SESAME_PI_GID (default 10001, the app container's user), CONFIG_CHECK_DIR
# (default /usr/local/lib/sesame-pi: the app's settings check, copied onto the image at build).
set -euo pipefail
umask 077

boot_dir="${BOOT_DIR:-/boot/firmware}"
etc_dir="${ETC_DIR:-/etc/sesame-pi}"
app_uid="${SESAME_PI_UID:-10001}"
app_gid="${SESAME_PI_GID:-10001}"
check_dir="${CONFIG_CHECK_DIR:-/usr/local/lib/sesame-pi}"
drop="$boot_dir/sesame-pi"

log() { echo "sesame-pi-firstboot: $*"; }

# The newest of the names that exist in the drop directory (FAT lookups ignore case).
found() {
  local name newest=""
  for name in "$@"; do
    if [[ -f "$drop/$name" ]] && { [[ -z "$newest" ]] || [[ "$drop/$name" -nt "$newest" ]]; }; then
      newest="$drop/$name"
    fi
  done
  [[ -n "$newest" ]] || return 1
  echo "$newest"
}

# Once the newest copy is in place: the older copies of the same thing (auth.json beside
# Notepad's auth.json.txt) are deleted, or a secret would stay on FAT and be moved over the newer
# one at the next boot. (Not before: a newer copy that is empty or unreadable is left on the card
# and the older one with it.)
forget_older() {
  local used="$1" name
  shift
  for name in "$@"; do
    if [[ -f "$drop/$name" && "$drop/$name" != "$used" ]]; then
      forget "$drop/$name"
      log "deleted $name from $drop: $(basename "$used") was newer"
    fi
  done
}

# Remove the FAT copy. shred overwrites the clusters first; on flash this is best effort only
# (wear levelling may keep old blocks), which the README says.
forget() {
  shred --zero --iterations=1 --remove=wipe "$1" 2>/dev/null || rm -f "$1"
}

# A secret (token, refresh token): one line, whitespace and a UTF-8 byte order mark removed (a JWT
# has neither; Notepad may add CRLF or a BOM), written to a temporary file in the target directory
# with mode 0600 from the first byte, then renamed over the old one so the app never reads half a
# token.
move_secret() {
  local src="$1" dest="$2" tmp
  tmp="$(mktemp "$dest.XXXXXX")"
  LC_ALL=C sed '1s/^\xEF\xBB\xBF//' "$src" | tr -d '[:space:]' >"$tmp"
  if [[ ! -s "$tmp" ]]; then
    rm -f "$tmp"
    log "$src is empty; left it there and kept the current $(basename "$dest")"
    return 1
  fi
  printf '\n' >>"$tmp"
  chown "$app_uid:$app_gid" "$tmp"
  chmod 0600 "$tmp"
  mv -f "$tmp" "$dest"
  forget "$src"
  log "moved $(basename "$src") to $dest (mode 0600, owner $app_uid); deleted it from $drop"
}

# The auth record (JSON): only a byte order mark and carriage returns removed, as the app's login
# parser accepts it; same mode, owner and atomic rename as a token.
move_record() {
  local src="$1" dest="$2" tmp
  tmp="$(mktemp "$dest.XXXXXX")"
  LC_ALL=C sed '1s/^\xEF\xBB\xBF//' "$src" | tr -d '\r' >"$tmp"
  if ! grep -q '[^[:space:]]' "$tmp"; then
    rm -f "$tmp"
    log "$src is empty; left it there"
    return 1
  fi
  chown "$app_uid:$app_gid" "$tmp"
  chmod 0600 "$tmp"
  mv -f "$tmp" "$dest"
  forget "$src"
  log "moved $(basename "$src") to $dest (mode 0600, owner $app_uid), a pending login for the app; deleted it from $drop"
}

# The app's own check of a config file (its config module, run by the image's Python): exit 3
# and the problems, one a line, when the app would refuse it.
app_refuses() {
  PYTHONPATH="$check_dir" python3 - "$1" <<'PY'
import sys
from pathlib import Path

from sesame_pi.config import ConfigError, load

try:
    load(Path(sys.argv[1]), environ={})
except ConfigError as exc:
    print("\n".join(p.replace(sys.argv[1], "config.toml") for p in exc.problems))
    sys.exit(3)
PY
}

# Said where the maker looks: the card, opened on their computer again.
refuse_config() {
  local src="$1" why="$2"
  log "$src: $why; left it there and kept the current config.toml"
  {
    echo "The Pi did not take config.toml from this folder: the app would refuse it."
    echo "Fix it and put the card back; this note goes once the Pi takes it."
    echo
    echo "$why"
  } >"$drop/config-error.txt" 2>/dev/null || true
}

# config.toml holds no secret the token files do not; the app's group reads it, root owns it.
# A byte order mark (Notepad) is removed; a file TOML cannot read, or one the app would refuse
# (a misspelt setting, a value out of range), stays on FAT with config-error.txt beside it, and
# the current config is kept: the app would never start, with no LED or earcon to say why.
move_config() {
  local src="$1" dest="$2" tmp problems rc
  tmp="$(mktemp "$dest.XXXXXX")"
  LC_ALL=C sed '1s/^\xEF\xBB\xBF//' "$src" >"$tmp"
  if command -v python3 >/dev/null &&
    ! python3 -c 'import sys, tomllib; tomllib.load(open(sys.argv[1], "rb"))' "$tmp" 2>/dev/null; then
    rm -f "$tmp"
    refuse_config "$src" "it is not valid TOML (a missing quote? curly quotes from a word processor?)"
    return 1
  fi
  if [[ -f "$check_dir/sesame_pi/config.py" ]] && command -v python3 >/dev/null; then
    rc=0
    problems="$(app_refuses "$tmp" 2>&1)" || rc=$?
    if ((rc == 3)); then
      rm -f "$tmp"
      refuse_config "$src" "$problems"
      return 1
    elif ((rc != 0)); then
      log "could not check $src with the app's settings ($problems); moving it all the same"
    fi
  fi
  rm -f "$drop/config-error.txt"
  chown "0:$app_gid" "$tmp"
  chmod 0640 "$tmp"
  mv -f "$tmp" "$dest"
  forget "$src"
  log "moved $(basename "$src") to $dest (mode 0640, group $app_gid); deleted it from $drop"
}

if [[ ! -d "$drop" ]]; then
  log "nothing to do: $drop does not exist"
  exit 0
fi

if [[ ! -d "$etc_dir" ]]; then
  install -d -m 0750 -o "$app_uid" -g "$app_gid" "$etc_dir"
  log "created $etc_dir"
fi

moved=0
names=(token token.txt)
if src="$(found "${names[@]}")"; then
  move_secret "$src" "$etc_dir/token" && forget_older "$src" "${names[@]}"
  moved=$((moved + 1))
fi
names=(refresh_token refresh_token.txt)
if src="$(found "${names[@]}")"; then
  move_secret "$src" "$etc_dir/refresh_token" && forget_older "$src" "${names[@]}"
  moved=$((moved + 1))
fi
names=(auth.json auth.json.txt auth.txt)
if src="$(found "${names[@]}")"; then
  move_record "$src" "$etc_dir/auth.pending.json" && forget_older "$src" "${names[@]}"
  moved=$((moved + 1))
fi
names=(firebase_api_key firebase_api_key.txt)
if src="$(found "${names[@]}")"; then
  move_secret "$src" "$etc_dir/firebase_api_key" && forget_older "$src" "${names[@]}"
  moved=$((moved + 1))
fi
names=(config.toml config.toml.txt)
if src="$(found "${names[@]}")"; then
  move_config "$src" "$etc_dir/config.toml" && forget_older "$src" "${names[@]}"
  moved=$((moved + 1))
else
  rm -f "$drop/config-error.txt"  # (about a file no longer there)
fi
((moved > 0)) || log "$drop holds no auth.json, token, refresh_token or config.toml"

# What macOS and Windows leave in a folder they touched, so that the folder can go.
find "$drop" -mindepth 1 -maxdepth 1 -type f \( -name '._*' -o -iname '.DS_Store' \
  -o -iname 'desktop.ini' -o -iname 'Thumbs.db' \) -delete
if rmdir "$drop" 2>/dev/null; then
  log "removed the empty $drop"
else
  log "left $drop in place; it still holds: $(find "$drop" -mindepth 1 -maxdepth 1 -printf '%f ')"
fi
sync
