#!/bin/sh
# Content check for one layer, run on the build host by the sandbox source (shell-local).
# It is NOT provisioning: it verifies that the playbook and scripts this layer names exist and
# are well-formed, and prints what the aws source would run on the instance.
# Env: SCRIPTS_DIR (the image's scripts content), ANSIBLE_DIR (its ansible content, when a playbook
# is set), OS_FAMILY (linux|windows), PLAYBOOK, SCRIPTS and HELPERS (space-separated),
# THEN (steps after the scripts that are not files, e.g. a restart; printed only).
set -eu
fail() { echo "content check FAILED: $*" >&2; exit 1; }
dir="${SCRIPTS_DIR:?}"
[ -d "$dir" ] || fail "no scripts content at $dir (catalog field content.scripts)"
: "${OS_FAMILY:?}"
checked=0

ansible_dir="${ANSIBLE_DIR:-}"
for input in ${INPUTS:-}; do
  repo=${input%%=*}; path=${input#*=}
  [ -d "$path" ] || fail "input repo $repo: checkout $path missing"
  echo "input repo $repo: checked out at $path ($(find "$path" -path "$path/.git" -prune -o -type f -print | wc -l) files)"
done

if [ -n "${PLAYBOOK:-}" ]; then
  playbook="$ansible_dir/$PLAYBOOK"
  [ -s "$playbook" ] || fail "playbook $PLAYBOOK not found (or empty) under $ansible_dir"
  if python3 -c 'import yaml' 2>/dev/null; then
    # Parse the playbook and every YAML file of the roles it uses; check the roles exist.
    python3 - "$playbook" <<'PY' || fail "playbook $PLAYBOOK is not well-formed"
import pathlib, sys, yaml
path = pathlib.Path(sys.argv[1])
plays = yaml.safe_load(path.read_text())
assert isinstance(plays, list) and plays, "a playbook is a non-empty list of plays"
for play in plays:
    assert isinstance(play, dict) and "hosts" in play, f"play without hosts: {play!r:.80}"
    for role in play.get("roles", []):
        name = role["role"] if isinstance(role, dict) else role
        tasks = path.parent / "roles" / name / "tasks" / "main.yml"
        assert tasks.is_file(), f"role {name}: {tasks} missing"
        for f in sorted((path.parent / "roles" / name).rglob("*.yml")):
            yaml.safe_load(f.read_text())
        print(f"  role {name}: ok")
PY
    echo "playbook $PLAYBOOK: YAML parsed, roles present"
  else
    echo "playbook $PLAYBOOK: present (not parsed: no python3 with PyYAML on this host)"
  fi
  checked=$((checked + 1))
fi

for s in ${SCRIPTS:-} ${HELPERS:-}; do
  f="$dir/$s"
  [ -s "$f" ] || fail "script $s not found (or empty) in the scripts content $dir"
  case "$s" in
    *.sh) sh -n "$f" || fail "$s: sh -n found a syntax error"; echo "script $s: sh -n ok" ;;
    *.ps1)
      if command -v pwsh >/dev/null 2>&1; then
        pwsh -NoProfile -Command "\$e = \$null; [void][System.Management.Automation.Language.Parser]::ParseFile('$f', [ref]\$null, [ref]\$e); if (\$e) { \$e; exit 1 }" \
          || fail "$s: PowerShell parser found errors"
        echo "script $s: PowerShell parse ok"
      else
        echo "script $s: present (not parsed: no pwsh on this host)"
      fi ;;
    *) fail "$s: expected a .sh or .ps1 script" ;;
  esac
  checked=$((checked + 1))
done

echo "content check passed ($checked checked). On the aws source this layer would run:"
[ -z "${PLAYBOOK:-}" ] || echo "  ansible-playbook $PLAYBOOK (connection local, via run-ansible.sh)"
for s in ${SCRIPTS:-}; do echo "  $s"; done
for s in ${HELPERS:-}; do case "$s" in run-ansible.sh) ;; *) echo "  $s" ;; esac; done
[ -z "${THEN:-}" ] || echo "  then: $THEN"
