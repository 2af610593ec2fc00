#!/usr/bin/env bash
# Install the Debian packages the app and its tests need (idempotent; quiet when all are present).
# Used by `make install`; with package names as arguments it installs those instead (the system
# suites' host packages, tests/system/lib/host-packages.sh).
set -euo pipefail

packages=(
  python3-venv python3-dev gcc                    # .venv itself; PyAudio has no Linux wheel: it compiles
  portaudio19-dev libasound2-plugins alsa-utils   # PyAudio build, ALSA plugins (pulse, file, plug)
  pulseaudio pulseaudio-utils sox                 # virtual audio devices for the demo and benchmarks
  iproute2 iptables                               # network namespaces and netem for fault tests
  libspeexdsp1 espeak-ng                          # the speex echo canceller; test speech for the echo tests
  chromium chromium-driver                        # the setup page's browser tests (headless, selenium)
  openssl                                         # `openssl rehash`: a hashed trust directory (test_tls.py)
)
if (($#)); then
  packages=("$@")
fi
missing=()
for pkg in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]} == 0)); then
  exit 0
fi
sudo=""
if [[ $(id -u) -ne 0 ]]; then
  sudo="sudo"
fi
echo "install-system-deps: installing ${missing[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
