#!/usr/bin/env bash
# Fetches Dawn (the WebGPU of Chrome) as a shared library for wgllm's second
# WebGPU implementation: libwebgpu_wrapper.so from the npm package
# bun-webgpu-linux-x64@0.1.7 (Dawn main of 2025-06, the ABI of
# runtime/gpu/internal/dawn/include/webgpu.h), checked against the
# registry's sha512 integrity pinned here, into third_party/dawn/ (ignored;
# never committed). wgllm loads it at run time; without it wgllm runs on
# wgpu-native. Only linux/amd64 has this build; elsewhere it says so and
# does nothing. Needs npm (apt-get install npm); without it, says so.
set -euo pipefail
cd "$(dirname "$0")/.."

PKG=bun-webgpu-linux-x64
VER=0.1.7
INTEGRITY=sha512-UEP7UZdEhx9otvkZczjsszL8ZVlrODANQvgl+C88/bNVmxDoFi7w1fWzGi1sZyakiETjmtFDq2/xCLhbSZxjqw==
DIR=third_party/dawn
LIB=libwebgpu_wrapper.so

if [ -f "$DIR/$LIB" ] && [ "$(cat "$DIR/.integrity" 2>/dev/null)" = "$INTEGRITY" ]; then
	exit 0
fi
if [ "$(uname -s)/$(uname -m)" != Linux/x86_64 ]; then
	echo "dawn: no Dawn build for $(uname -s)/$(uname -m) is pinned; wgllm uses wgpu-native here"
	exit 0
fi
if ! command -v npm >/dev/null 2>&1; then
	echo "dawn: npm is not installed, so Dawn is not fetched (apt-get install npm, then make); wgllm uses wgpu-native"
	exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "dawn: fetching $PKG@$VER from the npm registry"
(cd "$tmp" && npm pack --silent "$PKG@$VER" >/dev/null)
tgz="$tmp/$PKG-$VER.tgz"
# npm needs node, so node computes the digest (no openssl needed).
got="sha512-$(node -e 'process.stdout.write(require("crypto").createHash("sha512").update(require("fs").readFileSync(process.argv[1])).digest("base64"))' "$tgz")"
if [ "$got" != "$INTEGRITY" ]; then
	echo "dawn: $PKG@$VER has integrity $got, want $INTEGRITY: refusing it" >&2
	exit 1
fi
tar -xzf "$tgz" -C "$tmp" package/$LIB package/LICENSE
mkdir -p "$DIR"
cp "$tmp/package/$LIB" "$DIR/$LIB"
cp "$tmp/package/LICENSE" "$DIR/LICENSE.bun-webgpu"
cp scripts/notices/dawn/LICENSE-dawn "$DIR/LICENSE.dawn"
echo "$INTEGRITY" >"$DIR/.integrity"
echo "dawn: $DIR/$LIB ($PKG@$VER, $(du -h "$DIR/$LIB" | cut -f1))"
