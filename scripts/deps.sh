#!/usr/bin/env bash
# Installs what wgllm needs at build and run time on Debian/Ubuntu when it is
# missing: a C compiler for cgo, the Vulkan loader (libvulkan1) and Mesa's
# Vulkan drivers (lavapipe, the software adapter used when there is no GPU).
# It says what it does, and does nothing when everything is present.
set -euo pipefail

need=()
command -v gcc >/dev/null 2>&1 || need+=(gcc libc6-dev)
ldconfig -p 2>/dev/null | grep -q 'libvulkan\.so\.1' || need+=(libvulkan1)
ls /usr/share/vulkan/icd.d/lvp_icd*.json >/dev/null 2>&1 || need+=(mesa-vulkan-drivers)
for pkg in "$@"; do # extra packages a target asks for, e.g. chromium for browser tests
	dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || need+=("$pkg")
done

if ! command -v go >/dev/null 2>&1; then
	echo "deps: Go is not installed; install Go 1.26 or newer (https://go.dev/dl) and retry" >&2
	exit 1
fi

if [ ${#need[@]} -eq 0 ]; then
	echo "deps: gcc, libvulkan1 and a Vulkan driver (lavapipe) are present"
	exit 0
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then
	if command -v sudo >/dev/null 2>&1; then sudo="sudo"; else
		echo "deps: missing ${need[*]} and not root (no sudo): install them with apt-get" >&2
		exit 1
	fi
fi
if ! command -v apt-get >/dev/null 2>&1; then
	echo "deps: missing ${need[*]}; this is not a Debian/Ubuntu system, install the equivalents by hand" >&2
	exit 1
fi
echo "deps: installing ${need[*]} with apt-get"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -q >/dev/null
$sudo apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null
echo "deps: installed ${need[*]}"
