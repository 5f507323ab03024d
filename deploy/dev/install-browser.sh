#!/usr/bin/env bash
# Installs Debian's chromium for the browser tests (tests/browser/), which drive it with
# Playwright for Python through `executable_path=/usr/bin/chromium`. Playwright's own browser
# download (`playwright install`) is not used: the test machines reach package registries only.
#
# Usage: deploy/dev/install-browser.sh   (as root, or through sudo; a no-op when installed)
set -euo pipefail

say() { echo "install-browser: $*"; }

if command -v chromium >/dev/null 2>&1; then
    say "chromium is installed ($(chromium --version 2>/dev/null || echo 'version unknown'))"
    exit 0
fi

if [ "$(id -u)" != 0 ]; then
    say "chromium is missing; run as root (or through sudo) to install it with apt-get"
    exit 1
fi

say "installing Debian's chromium for the browser tests (about 100 MB, once)"
export DEBIAN_FRONTEND=noninteractive
if ! apt-get install -y -qq --no-install-recommends chromium >/dev/null; then
    say "apt-get install failed; refreshing the package lists and trying once more"
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi
command -v chromium >/dev/null || { say "chromium did not install"; exit 1; }
say "installed $(chromium --version 2>/dev/null || echo chromium)"
