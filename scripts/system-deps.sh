#!/usr/bin/env bash
# Installs the Debian packages the test suite drives for real, if any is missing:
#   ffmpeg (a real RTP sender), sox + espeak-ng (fixture audio), libportaudio2 (sounddevice),
#   chromium + chromium-driver (the dashboard, in a real headless browser) + fonts-dejavu-core
#   (so its screenshots have the same glyphs everywhere), openssl (the TLS tests make their own
#   certificate with it), redis-server (the fleet event backend, started by the tests on a free
#   port), mkvtoolnix (mkvmerge: a real Matroska muxer for the Kinesis Video Streams fixtures),
#   podman + runc + mmdebstrap (tests/integration/test_container.py builds and runs the
#   container image: deploy/container/build.sh) and uidmap (rootless podman and mmdebstrap's
#   unshare mode, when not run as root).
# Uses apt-get as root, or through sudo when available; otherwise says what is missing and
# carries on (the tests that need a missing tool skip, naming it), except under CI=true, where
# it fails: a CI run whose ffmpeg and chromium tests skipped would be green and prove nothing
# (the tests fail there too: require_tool in tests/conftest.py).
set -euo pipefail
packages=(ffmpeg sox espeak-ng libportaudio2 openssl)
packages+=(chromium chromium-driver fonts-dejavu-core)  # the dashboard's browser test
packages+=(redis-server)  # the Redis Streams fleet backend's tests
packages+=(mkvtoolnix)  # tests/fixtures/make_kvs_fixtures.py and the mkvmerge-made KVS test
packages+=(podman runc mmdebstrap uidmap)  # the container image's test
missing=()
for pkg in "${packages[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ]; then
  sudo=()
elif command -v sudo >/dev/null 2>&1; then
  sudo=(sudo)
else
  echo "system-deps: missing ${missing[*]}; install them with apt-get as root" >&2
  case "${CI:-}" in
    true|TRUE|True|1|yes) echo "system-deps: CI is set: a missing package fails the run" >&2; exit 1 ;;
  esac
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
