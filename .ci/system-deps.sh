#!/usr/bin/env bash
# Debian packages the test suite needs beyond the Python wheels:
#   - ffmpeg (ffprobe): reference frame times for the source conformance tests
#   - GStreamer RTSP server stack + python3-gi: a real RTSP server on loopback for the
#     live-source tests (run with Debian's /usr/bin/python3)
#   - build-essential + cmake: pip builds llama-cpp-python (its server answers in the tests)
#   - chromium + chromium-driver: the web page of `streamvid serve` tested in a real
#     headless browser (Selenium)
#   - espeak-ng: speech synthesised for the speech-memory tests and spoken NIAH needles
# Idempotent: safe to run on every CI start. Needs root (CI runs it as root).
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive

PACKAGES=(
  ffmpeg
  python3-gi
  gir1.2-gst-rtsp-server-1.0
  gstreamer1.0-rtsp
  gstreamer1.0-tools
  gstreamer1.0-plugins-base
  gstreamer1.0-plugins-good
  gstreamer1.0-plugins-bad
  gstreamer1.0-plugins-ugly
  gstreamer1.0-libav
  build-essential
  cmake
  chromium
  chromium-driver
  espeak-ng
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ "${#missing[@]}" -eq 0 ]; then
  echo "system-deps: all ${#PACKAGES[@]} packages already installed"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
  else
    echo "system-deps: need root to install: ${missing[*]}" >&2
    exit 1
  fi
fi

echo "system-deps: installing ${missing[*]}"
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
