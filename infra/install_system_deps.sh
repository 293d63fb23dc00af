#!/usr/bin/env bash
# Debian packages that tests run for real (and a font to draw Chinese with). Installs only what is
# missing; needs root (CI and dev machines here run as root). Nothing else is downloaded at run time.
set -euo pipefail
want=()
for pair in "prometheus-pushgateway:prometheus-pushgateway" "promtool:prometheus" "chromium:chromium"; do
  cmd=${pair%%:*}; pkg=${pair##*:}
  command -v "$cmd" >/dev/null 2>&1 || want+=("$pkg")
done
# Chinese pages (explain --lang zh, as PNG) need a CJK font, else Chromium draws every glyph as a box
[ -n "$(fc-list :lang=zh family 2>/dev/null || true)" ] || want+=("fonts-wqy-microhei")
[ ${#want[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "missing system packages: ${want[*]} (run: sudo apt-get install ${want[*]})" >&2
  exit 1
fi
echo "installing system packages: ${want[*]}"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${want[@]}" >/dev/null
