#!/usr/bin/env bash
# Make sure a Docker engine answers, starting Debian's dockerd if none runs.
# No bridge network and no iptables rules: builds and containers use the host's network
# (--network host), so no private-range address is ever configured. The engine's data lives under
# ${SESAME_PI_CACHE:-/var/cache/sesame-pi}/docker, so base images and build layers survive between
# runs. Prints the docker client to use.
set -euo pipefail

cache="${SESAME_PI_CACHE:-/var/cache/sesame-pi}"
log="$cache/dockerd.log"

if ! command -v dockerd >/dev/null 2>&1; then
  echo "dockerd.sh: installing Debian's docker.io" >&2
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    docker.io containerd runc iptables >&2
fi
# Debian's client matches Debian's engine; a newer client elsewhere on PATH is left alone.
client=/usr/bin/docker
[[ -x "$client" ]] || client="$(command -v docker)"

if "$client" info >/dev/null 2>&1; then
  # Ours (started below, by an earlier run) has no bridge network. Another (Debian's
  # docker.service, started as the package installed) has docker0 on a private range and NAT
  # rules, and keeps its data away from the cache: stopped, and ours started instead.
  if ! "$client" network ls --format '{{.Name}}' | grep -qx bridge; then
    echo "$client"
    exit 0
  fi
  echo "dockerd.sh: an engine with a bridge network answers (the system's docker.service?);" \
    "stopping it for one with --bridge=none" >&2
  if command -v systemctl >/dev/null 2>&1; then
    systemctl stop docker.socket docker.service >&2 2>/dev/null || true
  fi
  pkill -x dockerd || true
  for _ in $(seq 1 30); do
    "$client" info >/dev/null 2>&1 || break
    sleep 1
  done
  if "$client" info >/dev/null 2>&1; then
    echo "dockerd.sh: the engine with a bridge network did not stop; stop it and run again" >&2
    exit 1
  fi
fi

mkdir -p "$cache/docker"
echo "dockerd.sh: starting dockerd (--bridge=none, data in $cache/docker; log $log)" >&2
nohup dockerd --bridge=none --iptables=false --ip6tables=false --ip-forward=false \
  --ip-masq=false --data-root "$cache/docker" >"$log" 2>&1 &
for _ in $(seq 1 60); do
  if "$client" info >/dev/null 2>&1; then
    echo "$client"
    exit 0
  fi
  sleep 1
done
echo "dockerd.sh: the engine did not come up in 60 s; last lines of $log:" >&2
tail -n 20 "$log" >&2
exit 1
