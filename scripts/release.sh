#!/usr/bin/env bash
# Builds wgllm for every release target, checks each binary, and packages
# them into dist/: one archive per target (tar.gz for Linux, zip for
# Windows) holding the binary, README.md, wgllm's licence, the licences of
# everything linked in (Go modules, the Go runtime, wgpu-native) and a
# SHA256SUMS of its files, plus dist/SHA256SUMS over the archives. The
# linux/amd64 archive also carries Dawn (libwebgpu_wrapper.so, fetched by
# scripts/dawn.sh) beside the binary, with its licences.
#
# cgo needs a C cross compiler per target; missing ones are installed from
# Debian through scripts/deps.sh (gcc-aarch64-linux-gnu for linux/arm64,
# gcc-mingw-w64-x86-64 for windows/amd64). The binary for this machine is
# run (`wgllm version`, `wgllm devices`); the others cannot run here, so
# `file` checks their format (ELF aarch64, PE32+ x86-64) and their imports
# are checked for shared libraries a fresh system would lack.
#
# Environment: TARGETS (default "linux/amd64 linux/arm64 windows/amd64"),
# VERSION (default: git describe --tags --always --dirty), DIST (default dist).
set -euo pipefail
cd "$(dirname "$0")/.."

GO=${GO:-go}
TARGETS=${TARGETS:-linux/amd64 linux/arm64 windows/amd64}
DIST=${DIST:-dist}
MODULE=github.com/wgllm/wgllm
WEBGPU=github.com/cogentcore/webgpu

fail() {
	echo "release: $*" >&2
	exit 1
}

host="$($GO env GOHOSTOS)/$($GO env GOHOSTARCH)"

# C compiler and its Debian packages for each target built from another host.
declare -A cross_cc=(
	[linux/amd64]=x86_64-linux-gnu-gcc [linux/arm64]=aarch64-linux-gnu-gcc
	[windows/amd64]=x86_64-w64-mingw32-gcc
)
declare -A cross_pkgs=(
	[linux/amd64]="gcc-x86-64-linux-gnu libc6-dev-amd64-cross"
	[linux/arm64]="gcc-aarch64-linux-gnu libc6-dev-arm64-cross"
	[windows/amd64]="gcc-mingw-w64-x86-64"
)
# What `file` must say about each target's binary.
declare -A want_format=(
	[linux/amd64]="ELF 64-bit LSB*x86-64*" [linux/arm64]="ELF 64-bit LSB*ARM aarch64*"
	[windows/amd64]="PE32+ executable*x86-64*"
)

cc_for() {
	if [ "$1" = "$host" ]; then echo "${CC:-gcc}"; else echo "${cross_cc[$1]}"; fi
}

pkgs=(file zip binutils)
for t in $TARGETS; do
	[ -n "${want_format[$t]:-}" ] || fail "unknown target $t (known: ${!want_format[*]})"
	if [ "$t" != "$host" ]; then
		[ -n "${cross_cc[$t]:-}" ] || fail "no cross compiler known for $t on $host"
		# shellcheck disable=SC2206
		pkgs+=(${cross_pkgs[$t]})
	fi
done
./scripts/deps.sh "${pkgs[@]}"

VERSION=${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}
COMMIT=$(git rev-parse HEAD 2>/dev/null || echo unknown)
if [ "$COMMIT" != unknown ] && ! git diff --quiet HEAD -- 2>/dev/null; then COMMIT+="+dirty"; fi
# Archive timestamps: the commit's, so the same commit packs the same bytes.
EPOCH=$(git log -1 --format=%ct 2>/dev/null || date +%s)
LDFLAGS="-s -w -X $MODULE/internal/buildinfo.Version=$VERSION -X $MODULE/internal/buildinfo.Commit=$COMMIT"

modcache=$($GO env GOMODCACHE)
# The module cache spells upper-case letters as "!" and the lower-case letter.
moddir() { echo "$modcache/$(echo "$1" | sed -E 's/[A-Z]/!\L&/g')@$2"; }

# check_binary verifies a built binary for its target.
check_binary() {
	local t=$1 bin=$2 desc needed bad
	desc=$(file -b "$bin")
	# shellcheck disable=SC2053
	[[ $desc == ${want_format[$t]} ]] || fail "$t: $bin is \"$desc\", want \"${want_format[$t]}\""
	echo "release: $t: $desc"
	case $t in
	linux/*)
		# libvulkan is loaded at run time; anything linked must be on every glibc system.
		needed=$(readelf -d "$bin" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | sort | tr '\n' ' ')
		bad=$(tr ' ' '\n' <<<"$needed" | grep -vE '^(libc\.so\.6|libm\.so\.6|libdl\.so\.2|libpthread\.so\.0|libgcc_s\.so\.1|librt\.so\.1|libresolv\.so\.2|ld-linux.*)?$' || true)
		[ -z "$bad" ] || fail "$t: links shared libraries a fresh system may lack: $bad"
		echo "release: $t: needs $needed(glibc $(readelf --dyn-syms -W "$bin" | grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -1 | cut -d_ -f2) or newer)"
		;;
	windows/*)
		# MinGW's own runtime DLLs (libwinpthread-1, libgcc_s_seh-1, ...) are
		# not on Windows; only system DLLs may be imported.
		needed=$(x86_64-w64-mingw32-objdump -p "$bin" | sed -n 's/.*DLL Name: //p' | sort -u | tr '\n' ' ')
		bad=$(tr ' ' '\n' <<<"$needed" | grep -i '^lib' || true)
		[ -z "$bad" ] || fail "$t: imports MinGW runtime DLLs missing on Windows: $bad"
		echo "release: $t: imports $needed"
		;;
	esac
	local out
	if [ "$t" = "$host" ]; then
		out=$("$bin" version) || fail "$t: wgllm version failed"
		echo "$out"
		grep -qE "^wgllm +$VERSION\$" <<<"$out" || fail "$t: wgllm version does not report $VERSION"
		"$bin" devices || fail "$t: wgllm devices failed (is a Vulkan driver installed? scripts/deps.sh installs lavapipe)"
	elif [ "$t" = linux/arm64 ] && command -v qemu-aarch64-static >/dev/null && [ -d /usr/aarch64-linux-gnu ]; then
		# Where qemu-user-static happens to be installed, the arm64 binary
		# runs too (without a GPU: the version only).
		out=$(qemu-aarch64-static -L /usr/aarch64-linux-gnu "$bin" version) || fail "$t: wgllm version under qemu failed"
		grep -qE "^go +.* linux/arm64\$" <<<"$out" || fail "$t: wgllm version under qemu says: $out"
		echo "release: $t: wgllm version runs under qemu-aarch64"
	fi
}

# notices writes THIRD_PARTY_NOTICES.md and licenses/ for one built binary:
# every Go module linked in (from its build information), the Go runtime,
# and wgpu-native with the Rust crates its static library names.
notices() {
	local t=$1 bin=$2 dir=$3 os=${1%/*} arch=${1#*/}
	local n="$dir/THIRD_PARTY_NOTICES.md" mods path ver d files webgpu_ver="" lib wgpu_rev crates
	mkdir -p "$dir/licenses"
	{
		echo "# Third-party notices for wgllm $VERSION ($t)"
		echo
		echo "The licence texts are in licenses/."
		echo
		echo "## Go modules linked into wgllm"
		echo
		echo "| module | version | licence files |"
		echo "|---|---|---|"
	} >"$n"
	# A "=>" line replaces the module of the "dep" line above it.
	mods=$($GO version -m "$bin" | awk '
		$1 == "dep" { if (p != "") print p, v; p = $2; v = $3 }
		$1 == "=>" { p = $2; v = $3 }
		END { if (p != "") print p, v }' | sort -u)
	[ -n "$mods" ] || fail "$t: no module information in $bin"
	while read -r path ver; do
		d=$(moddir "$path" "$ver")
		files=$(cd "$d" 2>/dev/null && ls | grep -iE '^(licen[cs]e|copying|notice|unlicense|patents)' || true)
		[ -n "$files" ] || fail "$t: module $path $ver has no licence file in $d"
		mkdir -p "$dir/licenses/go/$path"
		for f in $files; do cp "$d/$f" "$dir/licenses/go/$path/"; done
		echo "| $path | $ver | $(echo $files | sed "s|\([^ ]*\)|licenses/go/$path/\1|g") |" >>"$n"
		[ "$path" = "$WEBGPU" ] && webgpu_ver=$ver
	done <<<"$mods"
	[ -n "$webgpu_ver" ] || fail "$t: $WEBGPU is not linked into $bin"
	mkdir -p "$dir/licenses/go-runtime" "$dir/licenses/wgpu-native"
	cp "$($GO env GOROOT)/LICENSE" "$dir/licenses/go-runtime/LICENSE"
	cp scripts/notices/wgpu-native/* "$dir/licenses/wgpu-native/"
	lib="$(moddir "$WEBGPU" "$webgpu_ver")/wgpu/lib/$os/$arch/libwgpu_native.a"
	[ -f "$lib" ] || fail "$t: no wgpu-native library at $lib"
	# Source paths left in the library's panic messages name wgpu's commit
	# and the crates.io crates compiled in.
	strings -n 8 "$lib" >"$DIST/.strings"
	# (Windows libraries spell the paths with backslashes.)
	wgpu_rev=$(grep -oE 'checkouts[/\\]wgpu-[0-9a-f]+[/\\][0-9a-f]+' "$DIST/.strings" | sed 's|.*[/\\]||' | sort -u | paste -sd' ' || true)
	crates=$(grep -oE 'registry[/\\]src[/\\][^/\\]+[/\\][A-Za-z0-9_-]+-[0-9][A-Za-z0-9.+_-]*' "$DIST/.strings" | sed 's|.*[/\\]||' | sort -u | paste -sd' ' || true)
	rm -f "$DIST/.strings"
	{
		echo
		echo "## The Go runtime and standard library"
		echo
		echo "$($GO env GOVERSION): BSD-3-Clause, licenses/go-runtime/LICENSE."
		echo
		echo "## wgpu-native"
		echo
		echo "The WebGPU implementation is wgpu-native, linked statically from the"
		echo "library that $WEBGPU $webgpu_ver ships for $t; it is built from"
		echo "wgpu-native and wgpu (gfx-rs, git commit ${wgpu_rev:-unknown}), both under"
		echo "MIT OR Apache-2.0: licenses/wgpu-native/LICENSE-MIT and LICENSE-APACHE."
		echo
		echo "Rust crates whose code the library names (each under its own licence,"
		echo "as published with the crate): ${crates:-none found}"
		echo
		echo "The Rust standard library is under MIT OR Apache-2.0 as well."
	} >>"$n"
}

# dawn_into adds Dawn's library and its licences to a linux/amd64 stage.
dawn_into() {
	local t=$1 stage=$2 lib=third_party/dawn/libwebgpu_wrapper.so
	[ "$t" = linux/amd64 ] || return 0
	./scripts/dawn.sh
	if [ ! -f "$lib" ]; then
		echo "release: WARNING: $t: no $lib (scripts/dawn.sh could not fetch it): the archive runs on wgpu-native only" >&2
		return 0
	fi
	cp "$lib" "$stage/"
	mkdir -p "$stage/licenses/dawn"
	cp scripts/notices/dawn/LICENSE-dawn scripts/notices/dawn/LICENSE-bun-webgpu "$stage/licenses/dawn/"
	{
		echo
		echo "## Dawn (libwebgpu_wrapper.so)"
		echo
		echo "The second WebGPU implementation, loaded at run time from beside the"
		echo "binary (\`--gpu-impl dawn\`, or auto), is libwebgpu_wrapper.so from the npm"
		echo "package bun-webgpu-linux-x64 0.1.7: Dawn (Google, main of 2025-06) under"
		echo "BSD-3-Clause, licenses/dawn/LICENSE-dawn, built with its wrapper under"
		echo "Apache-2.0, licenses/dawn/LICENSE-bun-webgpu. It contains Abseil and"
		echo "SPIRV-Tools, both under Apache-2.0 (the same text)."
	} >>"$stage/THIRD_PARTY_NOTICES.md"
	echo "release: $t: carries Dawn ($(du -h "$lib" | cut -f1))"
}

package() {
	local t=$1 stage=$2 name=$3
	# Files copied from the read-only module cache keep its modes.
	find "$stage" -type d -exec chmod 755 {} + && find "$stage" -type f -exec chmod 644 {} +
	chmod 755 "$stage"/wgllm*
	(cd "$stage" && find . -type f ! -name SHA256SUMS | sed 's|^\./||' | LC_ALL=C sort | xargs sha256sum >SHA256SUMS)
	find "$stage" -exec touch -h -d "@$EPOCH" {} +
	case $t in
	windows/*)
		(cd "$DIST" && rm -f "$name.zip" && find "$name" | LC_ALL=C sort | zip -q -X -@ "$name.zip")
		;;
	*)
		tar -C "$DIST" --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$EPOCH" -cf - "$name" | gzip -n >"$DIST/$name.tar.gz"
		;;
	esac
	rm -rf "$stage"
}

own_licence=$(ls LICENSE* COPYING* 2>/dev/null || true)
[ -n "$own_licence" ] || echo "release: WARNING: no LICENSE at the repository root: the archives carry no licence of wgllm's own" >&2
[ -n "$DIST" ] || fail "DIST is empty"
rm -rf "$DIST"
mkdir -p "$DIST"
start=$(date +%s)
for t in $TARGETS; do
	os=${t%/*} arch=${t#*/}
	name="wgllm-$VERSION-$os-$arch"
	stage="$DIST/$name"
	bin="$stage/wgllm"
	[ "$os" = windows ] && bin+=.exe
	mkdir -p "$stage"
	cc=$(cc_for "$t")
	t0=$(date +%s)
	CGO_ENABLED=1 GOOS=$os GOARCH=$arch CC=$cc $GO build -trimpath -ldflags "$LDFLAGS" -o "$bin" ./cmd/wgllm ||
		fail "$t: build failed (CC=$cc)"
	echo "release: $t: built with CC=$cc in $(($(date +%s) - t0))s, $(du -h "$bin" | cut -f1)"
	check_binary "$t" "$bin"
	notices "$t" "$bin" "$stage"
	dawn_into "$t" "$stage"
	cp README.md "$stage/"
	if [ -n "$own_licence" ]; then cp $own_licence "$stage/"; fi
	package "$t" "$stage" "$name"
done
shopt -s nullglob
(cd "$DIST" && sha256sum -- *.tar.gz *.zip >SHA256SUMS)
[ -s "$DIST/SHA256SUMS" ] || fail "no archives in $DIST"
echo "release: $VERSION ($COMMIT) for $TARGETS in $(($(date +%s) - start))s:"
(cd "$DIST" && ls -l --time-style=+ -- *.tar.gz *.zip && cat SHA256SUMS)
