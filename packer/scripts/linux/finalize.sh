#!/bin/sh
# Last step of every Linux layer: record the layer, then remove build-only tools and
# per-instance state so each instance launched from the image initialises itself afresh.
set -eu
mkdir -p /etc/image-assets
printf '%s %s %s\n' "${IMAGE_NAME:?}" "${IMAGE_VERSION:?}" "${SOURCE_IMAGE_ID:-}" >> /etc/image-assets/layers

rm -rf /opt/image-assets/ansible /tmp/ansible /tmp/inputs
# The build's CA bundle (template variable build_ca_bundle) never ships.
rm -f /tmp/image-assets-build-ca.pem
rmdir /opt/image-assets 2>/dev/null || true
if command -v dnf >/dev/null 2>&1; then
  dnf -q clean all
elif command -v apt-get >/dev/null 2>&1; then
  apt-get -qq clean && rm -rf /var/lib/apt/lists/*
fi

rm -f /etc/ssh/ssh_host_*_key /etc/ssh/ssh_host_*_key.pub
rm -f /root/.ssh/authorized_keys /home/*/.ssh/authorized_keys
rm -f /root/.bash_history /home/*/.bash_history
rm -rf /var/lib/cloud/instances/* /var/lib/cloud/instance
[ ! -f /etc/machine-id ] || : > /etc/machine-id
find /var/log -type f \( -name '*.log' -o -name 'wtmp' -o -name 'lastlog' \) -exec truncate -s 0 {} +
