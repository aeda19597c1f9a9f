#!/usr/bin/env bash
# Make an ONNX Runtime release layout (include/, lib/) for building libhiergen on this machine:
#   scripts/get-onnxruntime.sh [DEST]          (default: build/onnxruntime)
#   cmake -S . -B build -DONNXRUNTIME_ROOT=build/onnxruntime
#
# Headers: the C/C++ API headers of ONNX Runtime 1.29 from the npm package com.github.asus4.onnxruntime
# 0.4.9 (checked against its SHA-256). Library: libonnxruntime.so from the onnxruntime wheel in .venv (1.32
# here). The C API is versioned (OrtGetApiBase()->GetApi(ORT_API_VERSION)), so headers older than the
# library work. With an official release tarball or JetPack's ONNX Runtime, skip this script and point
# ONNXRUNTIME_ROOT at it instead.
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=${1:-build/onnxruntime}
PY=${PYTHON:-.venv/bin/python}
PKG=com.github.asus4.onnxruntime
VER=0.4.9
SHA=e59788788818fdde1b2e522e766a21ba0f7d8391de55737abf81e32cc801785d
TGZ=$PKG-$VER.tgz

if [ -f "$DEST/include/onnxruntime_cxx_api.h" ] && [ -e "$DEST/lib/libonnxruntime.so" ]; then
  echo "ONNX Runtime layout already in $DEST"; exit 0
fi
mkdir -p "$DEST/include" "$DEST/lib"
CACHE=${HIERGEN_ORT_CACHE:-build/.ort-download}
mkdir -p "$CACHE"
if [ ! -f "$CACHE/$TGZ" ] || ! echo "$SHA  $CACHE/$TGZ" | sha256sum -c --status; then
  rm -f "$CACHE/$TGZ"
  if command -v npm >/dev/null 2>&1; then
    (cd "$CACHE" && npm pack --silent "$PKG@$VER" >/dev/null)
  else
    curl -fsSL -o "$CACHE/$TGZ" "https://registry.npmjs.org/$PKG/-/$TGZ"
  fi
fi
echo "$SHA  $CACHE/$TGZ" | sha256sum -c --status || { echo "error: $CACHE/$TGZ does not match its SHA-256" >&2; exit 1; }
HDR=package/Plugins/iOS~/onnxruntime.xcframework/ios-arm64/onnxruntime.framework/Headers
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
tar xzf "$CACHE/$TGZ" -C "$tmp" "$HDR"
cp "$tmp/$HDR"/*.h "$DEST/include/"

CAPI=$("$PY" -c "import onnxruntime, os; print(os.path.join(os.path.dirname(onnxruntime.__file__), 'capi'))")
SO=$(ls "$CAPI"/libonnxruntime.so.* | head -1)
[ -n "$SO" ] || { echo "error: no libonnxruntime.so.* in $CAPI: pip install onnxruntime into .venv first (make setup)" >&2; exit 1; }
cp "$SO" "$DEST/lib/"
base=$(basename "$SO")                                     # libonnxruntime.so.1.32.0
ln -sf "$base" "$DEST/lib/libonnxruntime.so.1"
ln -sf "$base" "$DEST/lib/libonnxruntime.so"
[ -f "$CAPI/libonnxruntime_providers_shared.so" ] && cp "$CAPI/libonnxruntime_providers_shared.so" "$DEST/lib/"
echo "ONNX Runtime layout in $DEST: headers from npm $PKG $VER, $base from $("$PY" -c 'import onnxruntime; print("onnxruntime", onnxruntime.__version__)')"
