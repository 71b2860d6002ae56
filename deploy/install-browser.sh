#!/usr/bin/env bash
# Install Debian's Chromium and its driver for the browser tests (tests/web), idempotently.
# Kept apart from install.sh: only the browser tests need it, and they call it themselves when
# /usr/bin/chromium is missing (skipping with the reason if it cannot be installed).
set -euo pipefail

PACKAGES=(chromium chromium-driver fonts-noto-cjk)

missing=()
for p in "${PACKAGES[@]}"; do
  if [[ "$(dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null)" != ii* ]]; then
    missing+=("$p")
  fi
done
[[ ${#missing[@]} -eq 0 ]] && exit 0

SUDO=()
if [[ "$(id -u)" -ne 0 ]]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO=(sudo -n)
  else
    echo "install-browser: root is needed to install: ${missing[*]}" >&2
    exit 1
  fi
fi

echo "install-browser: installing Debian packages: ${missing[*]}" >&2
"${SUDO[@]}" apt-get update -qq >/dev/null
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
  "${missing[@]}" >/dev/null
[[ -x /usr/bin/chromium ]] || { echo "install-browser: /usr/bin/chromium still missing" >&2; exit 1; }
