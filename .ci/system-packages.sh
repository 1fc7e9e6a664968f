#!/usr/bin/env bash
# System packages some tests need (Debian/Ubuntu): redis-server for cog_assets_tests/end_to_end/test_celery.py
# (the dagster-celery broker) and chromium for cog_assets_tests/end_to_end/test_ui.py (headless browser
# driven by Playwright; no browser is ever downloaded by `playwright install`).
#
# Idempotent and quiet: does nothing (and touches no package index) when both are installed.
# Without apt-get, or without root/sudo, it says so and exits 0: those tests then skip with a
# message. A failing apt-get is an error.
set -euo pipefail

packages=(redis-server chromium)
binaries=(redis-server chromium)

missing=()
for i in "${!packages[@]}"; do
  if ! command -v "${binaries[$i]}" >/dev/null 2>&1; then
    missing+=("${packages[$i]}")
  fi
done
[ "${#missing[@]}" -eq 0 ] && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
  echo "system-packages: no apt-get here; install ${missing[*]} yourself" \
       "(the tests that need them are skipped)" >&2
  exit 0
fi
if [ "$(id -u)" -eq 0 ]; then
  as_root=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  as_root=(sudo -n)
else
  echo "system-packages: not root and no passwordless sudo; install ${missing[*]} yourself" \
       "(the tests that need them are skipped)" >&2
  exit 0
fi

echo "system-packages: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
if ! { ${as_root[@]+"${as_root[@]}"} apt-get update -qq &&
       ${as_root[@]+"${as_root[@]}"} apt-get install -y -qq --no-install-recommends "${missing[@]}"; } \
     >"$log" 2>&1; then
  cat "$log" >&2
  echo "system-packages: apt-get failed for ${missing[*]}" >&2
  exit 1
fi
