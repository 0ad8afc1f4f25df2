#!/usr/bin/env bash
# Installs Debian's chromium for the browser tests (puppeteer-core drives it; no browser is downloaded
# by npm). fonts-liberation gives the page's screenshot real glyphs.
set -euo pipefail
if ! command -v chromium >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium fonts-liberation >/dev/null
fi
