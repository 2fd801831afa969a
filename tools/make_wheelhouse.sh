#!/usr/bin/env bash
# Download every wheel mmmambaout needs, for a given Python version and platform, into a
# folder, so that a machine without internet (a GPU node) can install with
#   pip install --no-index --find-links DIR -e ".[lite]"
#
# Usage: tools/make_wheelhouse.sh DIR [--python 3.12] [--platform manylinux_2_28_x86_64]
#                                     [--exclude 'torch,torchvision,triton,nvidia-*']
#                                     [--extras lite,tests]
# --exclude drops packages the target already has (e.g. its own CUDA build of torch) and
# what only they need (tools/misc/select_wheels.py); names are matched
# case-insensitively, '-'/'_' alike, with shell globs.
set -euo pipefail
DEST=${1:?usage: make_wheelhouse.sh DIR [--python X.Y] [--platform TAG] [--exclude a,b*] [--extras e1,e2]}
shift
PY=3.12; PLATFORM=manylinux_2_28_x86_64; EXCLUDE=""; EXTRAS="lite"
while [ $# -gt 0 ]; do
    case "$1" in
        --python) PY=$2; shift 2;;
        --platform) PLATFORM=$2; shift 2;;
        --exclude) EXCLUDE=$2; shift 2;;
        --extras) EXTRAS=$2; shift 2;;
        *) echo "unknown argument: $1" >&2; exit 2;;
    esac
done
ROOT=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$DEST"
# older manylinux tags are compatible with newer glibc: offer them all
PLATS=(--platform "$PLATFORM")
case "$PLATFORM" in manylinux_2_*_x86_64)
    for t in manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux_2_27_x86_64 manylinux_2_28_x86_64; do
        PLATS+=(--platform "$t"); done;;
esac
TARGET_ARGS=(--only-binary=:all: --python-version "$PY" --implementation cp "${PLATS[@]}")
REPORT=$(mktemp)
# resolve the whole dependency set for the target, without installing anything
python -m pip install -q --dry-run --ignore-installed --report "$REPORT" --target "$(mktemp -d)" \
    "${TARGET_ARGS[@]}" "$ROOT[$EXTRAS]"
python "$ROOT/tools/misc/select_wheels.py" "$REPORT" "$EXCLUDE" --python "$PY" > "$REPORT.list"
xargs python -m pip download -q --no-deps "${TARGET_ARGS[@]}" -d "$DEST" < "$REPORT.list"
echo "$(wc -l < "$REPORT.list") wheels for Python $PY / $PLATFORM in $DEST ($(du -sh "$DEST" | cut -f1))"
echo "install offline with: pip install --no-index --find-links $DEST -e \"$ROOT[$EXTRAS]\""
rm -f "$REPORT" "$REPORT.list"
