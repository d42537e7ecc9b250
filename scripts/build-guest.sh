#!/usr/bin/env bash
# Builds the test guest under build/guest/ from Debian packages only: the kernel taken out of the
# linux-image package (downloaded and unpacked, never installed on the host) and an initramfs of
# busybox-static plus the kernel modules for virtio PCI, virtio-net and 9P over virtio, and the
# ACPI power button (button, evdev) so a graceful power-down (QMP system_powerdown) reaches it.
# Idempotent: does nothing when the outputs are newer than their inputs.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=build/guest
WORK=build/guest-work
mkdir -p "$OUT" "$WORK"

bash scripts/install-system-deps.sh busybox-static kmod cpio

# The kernel package the linux-image-amd64 metapackage points at today.
pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
if [ -z "$pkg" ]; then
  apt-get update -qq
  pkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
fi
kver=${pkg#linux-image-}

inputs=(guest/init.sh guest/agent.sh guest/probe.sh guest/udhcpc.sh guest/power-button.sh scripts/build-guest.sh /bin/busybox)
if [ -f "$OUT/initramfs.cpio.gz" ] && [ -f "$OUT/vmlinuz" ] && [ "$(cat "$OUT/kernel-version" 2>/dev/null)" = "$kver" ]; then
  fresh=1
  for f in "${inputs[@]}"; do [ "$f" -nt "$OUT/initramfs.cpio.gz" ] && fresh=0; done
  if [ "$fresh" = 1 ]; then echo "build-guest: up to date ($kver)"; exit 0; fi
fi

if [ ! -d "$WORK/kernel/lib/modules/$kver" ]; then
  echo "build-guest: fetching $pkg" >&2
  rm -rf "$WORK/kernel" "$WORK"/*.deb
  (cd "$WORK" && apt-get download -q "$pkg" 2>&1 | grep -v '^W: Download is performed unsandboxed' >&2 || true)
  deb=$(ls "$WORK"/linux-image-*.deb | head -1)
  dpkg-deb -x "$deb" "$WORK/kernel"
  rm -f "$deb"
  # The package ships no modules.dep.
  depmod -b "$WORK/kernel" "$kver"
fi
mods="$WORK/kernel/lib/modules/$kver"

# Modules wanted, and their dependencies, in an order insmod can load them.
wanted=(virtio_pci virtio_net 9pnet_virtio 9p button evdev)
declare -A seen=()
order=()
resolve() {
  local name=$1 line path deps d
  line=$(grep -E "(^|/)${name}\.ko(\.[a-z]+)?:" "$mods/modules.dep" | head -1)
  [ -n "$line" ] || { echo "build-guest: module $name not found in $kver" >&2; exit 1; }
  path=${line%%:*}
  [ -n "${seen[$path]:-}" ] && return
  seen[$path]=1
  deps=${line#*:}
  for d in $deps; do resolve "$(basename "$d" | sed -E 's/\.ko(\.[a-z]+)?$//')"; done
  order+=("$path")
}
for m in "${wanted[@]}"; do resolve "$m"; done
# virtio_pci binds legacy and modern devices through these helpers even with disable-legacy=on.
for extra in virtio_pci_legacy_dev virtio_pci_modern_dev; do resolve "$extra"; done

root="$WORK/initramfs"
rm -rf "$root"
mkdir -p "$root"/{bin,dev,proc,sys,tmp,modules,env,etc/certs}
cp /bin/busybox "$root/bin/busybox"
install -m 0755 guest/init.sh "$root/init"
install -m 0755 guest/agent.sh "$root/agent.sh"
install -m 0755 guest/probe.sh "$root/probe.sh"
install -m 0755 guest/udhcpc.sh "$root/udhcpc.sh"
mkdir -p "$root/etc/acpi/PWRF"
install -m 0755 guest/power-button.sh "$root/etc/acpi/PWRF/00000080"
: >"$root/modules.order"
for p in "${order[@]}"; do
  cp "$mods/$p" "$root/modules/"
  basename "$p" >>"$root/modules.order"
done
(cd "$root" && find . -print0 | cpio --null -o -H newc --quiet | gzip -9n) >"$OUT/initramfs.cpio.gz.tmp"
mv "$OUT/initramfs.cpio.gz.tmp" "$OUT/initramfs.cpio.gz"
cp "$WORK/kernel/boot/vmlinuz-$kver" "$OUT/vmlinuz"
echo "$kver" >"$OUT/kernel-version"
echo "build-guest: built $OUT (kernel $kver, modules: $(tr '\n' ' ' <"$root/modules.order"))" >&2
