#!/usr/bin/env bash
# Make sure the system tools the tests use are installed: install what is missing with apt-get
# (as root, or with passwordless sudo), or fail naming the command that installs it.
set -euo pipefail
declare -A PACKAGE=([kcat]=kcat [promtool]=prometheus [chromium]=chromium)
missing=()
for tool in "$@"; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("${PACKAGE[$tool]:-$tool}")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "installing missing test tools: ${missing[*]}"
if command -v apt-get >/dev/null 2>&1; then
  if [ "$(id -u)" -eq 0 ]; then SUDO=""; elif sudo -n true 2>/dev/null; then SUDO="sudo -n"; else SUDO=none; fi
  if [ "$SUDO" != none ]; then
    $SUDO apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    exit 0
  fi
fi
echo "missing: ${missing[*]}. Install with: sudo apt-get install ${missing[*]}  (macOS: brew install ${missing[*]})" >&2
exit 1
