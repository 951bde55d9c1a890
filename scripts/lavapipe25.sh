#!/usr/bin/env bash
# Installs Mesa 25's lavapipe (the software Vulkan driver) for testing wgllm
# on Dawn, which rejects the Mesa 22.3 of Debian 12 ("No supported
# adapters"). It goes into third_party/mesa25/ (ignored), not over the
# system's Mesa: packages from bookworm-backports are downloaded with a
# private apt state (the system's sources and lists are left as they are)
# and unpacked with dpkg -x, and third_party/mesa25/env holds what a test
# run needs (VK_DRIVER_FILES to its ICD, LD_LIBRARY_PATH to the newer libdrm
# it links). Debian 12 (bookworm) only; elsewhere it prints why not and the
# system's Vulkan driver is used. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

DIR=$PWD/third_party/mesa25
PKGS="mesa-vulkan-drivers libdrm2 libdrm-amdgpu1 libdrm-common"

if [ -f "$DIR/env" ]; then
	exit 0
fi
. /etc/os-release 2>/dev/null || true
if [ "${VERSION_CODENAME:-}" != bookworm ] || ! command -v apt-get >/dev/null; then
	echo "lavapipe25: not Debian 12 (bookworm): Dawn tests use the system's Vulkan driver"
	exit 0
fi
state=$(mktemp -d)
trap 'rm -rf "$state"' EXIT
mkdir -p "$state/lists/partial" "$state/cache/archives/partial" "$state/debs"
key=/usr/share/keyrings/debian-archive-keyring.gpg
printf 'deb [signed-by=%s] http://deb.debian.org/debian bookworm-backports main\n' "$key" >"$state/sources.list"
apt=(-o Dir::Etc::SourceList="$state/sources.list" -o Dir::Etc::SourceParts=/dev/null
	-o Dir::State::Lists="$state/lists" -o Dir::Cache="$state/cache" -o APT::Sandbox::User=root)
echo "lavapipe25: downloading $PKGS from bookworm-backports"
apt-get "${apt[@]}" update -q >/dev/null
(cd "$state/debs" && apt-get "${apt[@]}" download $PKGS >/dev/null)
rm -rf "$DIR.tmp" && mkdir -p "$DIR.tmp"
for d in "$state"/debs/*.deb; do dpkg -x "$d" "$DIR.tmp"; done
lib="$DIR/usr/lib/$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || echo x86_64-linux-gnu)"
[ -f "${lib/$DIR/$DIR.tmp}/libvulkan_lvp.so" ] || { echo "lavapipe25: no libvulkan_lvp.so in the packages" >&2; exit 1; }
mv "$DIR.tmp" "$DIR"
printf '{"file_format_version":"1.0.0","ICD":{"api_version":"1.4.305","library_path":"%s/libvulkan_lvp.so"}}\n' "$lib" >"$DIR/lvp_icd.json"
printf 'VK_DRIVER_FILES=%s/lvp_icd.json\nLD_LIBRARY_PATH=%s\n' "$DIR" "$lib" >"$DIR/env"
echo "lavapipe25: $(ls "$state"/debs | grep mesa-vulkan) in $DIR"
