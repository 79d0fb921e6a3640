#!/bin/sh
# Login banner for SSH and local consoles (CIS 1.7.x, 5.2.x): a legal notice, no OS details.
set -eu
cat > /etc/issue.net <<'TXT'
Authorised use only. Activity on this system is monitored and recorded;
use of it constitutes consent to that monitoring.
TXT
cp /etc/issue.net /etc/issue
chmod 0644 /etc/issue /etc/issue.net
if [ -d /etc/ssh ]; then
  mkdir -p /etc/ssh/sshd_config.d
  echo 'Banner /etc/issue.net' > /etc/ssh/sshd_config.d/20-banner.conf
  chmod 0600 /etc/ssh/sshd_config.d/20-banner.conf
fi
