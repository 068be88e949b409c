#!/usr/bin/env bash
# Install ctvoco into a virtual environment exactly as the Docker image does, at the versions
# pinned in requirements/image.txt (make lock). The Dockerfile runs the steps one by one (the
# dependencies in a layer of their own, before the source is copied); CI runs `all`.
#
#   scripts/install-image.sh deps  VENV       create VENV, install the pinned dependencies
#   scripts/install-image.sh app   VENV [SRC] install ctvoco from SRC (default: this checkout)
#   scripts/install-image.sh smoke VENV       the image's smoke commands
#   scripts/install-image.sh all   VENV [SRC] deps, app and smoke
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
lock="$root/requirements/image.txt"
python="${PYTHON:-python3}"

usage() {
  echo "usage: $0 {deps|app|smoke|all} VENV [SRC]" >&2
  exit 2
}

deps() {
  local venv=$1
  [[ -f "$lock" ]] || { echo "$0: $lock not found (make lock writes it)" >&2; exit 2; }
  [[ -x "$venv/bin/python" ]] || "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --requirement "$lock"
}

app() {
  local venv=$1 src=${2:-$root}
  # Every dependency is already pinned and installed: nothing else may be pulled in.
  "$venv/bin/python" -m pip install --quiet --no-deps "$src"
}

smoke() {
  local venv=$1
  "$venv/bin/python" -m pip check
  "$venv/bin/ctvoco-info" --version
  "$venv/bin/ctvoco-pretrain" --help > /dev/null
  "$venv/bin/ctvoco-finetune" --help > /dev/null
  # The core decoders: RLE (RSNA) and JPEG Lossless (hospital CT).
  "$venv/bin/python" -c "import pydicom.pixels as px, pydicom.uid as uid
for syntax in (uid.RLELossless, uid.JPEGLosslessSV1, uid.JPEGLSLossless, uid.JPEG2000Lossless):
    assert px.get_decoder(syntax).is_available, f'no decoder for {syntax.name}'"
}

[[ $# -ge 2 ]] || usage
step=$1 venv=$2 src=${3:-}
case "$step" in
  deps) deps "$venv" ;;
  app) app "$venv" ${src:+"$src"} ;;
  smoke) smoke "$venv" ;;
  all) deps "$venv" && app "$venv" ${src:+"$src"} && smoke "$venv" ;;
  *) usage ;;
esac
