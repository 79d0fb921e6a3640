#!/bin/sh
# Apply pending updates so a layer starts from a patched base (run by global layers).
set -eu
if command -v dnf >/dev/null 2>&1; then
  # AL2023 pins its repositories to a release: move to the newest one, then update.
  dnf -y -q upgrade --releasever=latest || dnf -y -q upgrade
elif command -v apt-get >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get -qq update
  apt-get -qq -y -o Dpkg::Options::=--force-confold dist-upgrade
else
  echo "update-packages.sh: no dnf or apt-get" >&2; exit 1
fi
