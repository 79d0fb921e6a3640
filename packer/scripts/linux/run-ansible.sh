#!/bin/sh
# Runs one playbook from packer/ansible (uploaded to $ANSIBLE_DIR) against this machine.
# ansible-core lives in a throwaway venv that finalize.sh removes; pip honours PIP_INDEX_URL
# and friends from the template's secret_env, and so do the roles (same environment).
# PLAYBOOK_VARS: a JSON object of extra variables for the playbook (the template's playbook_vars).
set -eu
: "${PLAYBOOK:?}" "${ANSIBLE_DIR:=/tmp/ansible}"
VENV=/opt/image-assets/ansible
[ -n "${PLAYBOOK_VARS:-}" ] || PLAYBOOK_VARS='{}'

if command -v dnf >/dev/null 2>&1; then
  dnf -y -q install python3 python3-pip
elif command -v apt-get >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get -qq update && apt-get -qq -y install python3 python3-venv python3-apt
fi
if [ ! -x "$VENV/bin/ansible-playbook" ]; then
  python3 -m venv "$VENV"
  # 2.15 is the last ansible-core whose controller runs on python 3.9 (AL2023's python3).
  "$VENV/bin/pip" install -q "ansible-core~=2.15.0"
fi

cd "$ANSIBLE_DIR"
exec "$VENV/bin/ansible-playbook" --connection=local --inventory=localhost, \
  --extra-vars=ansible_python_interpreter=/usr/bin/python3 --extra-vars="$PLAYBOOK_VARS" "$PLAYBOOK"
