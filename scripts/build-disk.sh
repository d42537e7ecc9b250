#!/usr/bin/env bash
# Builds build/guest/disk.qcow2 from the test guest of scripts/build-guest.sh: a GPT disk whose one
# partition, the EFI system partition, holds a unified kernel image at \EFI\BOOT\BOOTX64.EFI (the
# removable-media path OVMF boots with no boot entry set). The UKI is systemd-boot-efi's stub with
# the kernel, the initramfs and the kernel command line added as PE sections, so the guest boots
# from the disk alone: the Go manager's disk argv has no -kernel, -append or -initrd.
# No root and no loop mounts: the FAT file system is filled with mtools, the GPT written by sgdisk
# on a file. (Debian 12 has no ukify, new in systemd 253; the stub and objcopy do the same job.)
# Idempotent: does nothing when the outputs are newer than their inputs.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=build/guest
WORK=build/guest-work/disk
DISK=$OUT/disk.qcow2
# What the guest's /proc/cmdline reads: baked in, as in the Go manager's disk image (its GRUB
# config), since nothing of the argv reaches it. console=ttyS0: the kernel's own errors on the
# serial console QEMU's -nographic shows (kernel boot: `quiet console=null`, init writes to ttyS0).
CMDLINE="console=ttyS0 quiet"
STUB=/usr/lib/systemd/boot/efi/linuxx64.efi.stub

bash scripts/install-system-deps.sh systemd-boot-efi binutils dosfstools mtools gdisk qemu-utils
for f in "$OUT/vmlinuz" "$OUT/initramfs.cpio.gz"; do
  [ -f "$f" ] || { echo "build-disk: no $f: build the test guest first (make guest)" >&2; exit 1; }
done

inputs=("$OUT/vmlinuz" "$OUT/initramfs.cpio.gz" scripts/build-disk.sh "$STUB")
if [ -f "$DISK" ] && [ "$(cat "$OUT/disk-cmdline" 2>/dev/null)" = "$CMDLINE" ]; then
  fresh=1
  for f in "${inputs[@]}"; do [ "$f" -nt "$DISK" ] && fresh=0; done
  if [ "$fresh" = 1 ]; then echo "build-disk: up to date"; exit 0; fi
fi

rm -rf "$WORK"
mkdir -p "$WORK"
printf '%s' "$CMDLINE" >"$WORK/cmdline"

# The UKI. Each added section is placed after the stub's image, 4 KiB aligned (a multiple of the
# stub's SectionAlignment), one after the other; the stub's ImageBase is 0, so VMA = offset.
align=4096
roundup() { echo $(( ($1 + align - 1) / align * align )); }
hex() { printf '0x%x' "$1"; }
size_of_image=$(objdump -p "$STUB" | awk '$1 == "SizeOfImage" { print $2 }')
image_base=$(objdump -p "$STUB" | awk '$1 == "ImageBase" { print $2 }')
[ $((16#$image_base)) -eq 0 ] || { echo "build-disk: $STUB has ImageBase 0x$image_base, expected 0" >&2; exit 1; }
at=$(roundup $((16#$size_of_image)))
sections=()
for s in cmdline:"$WORK/cmdline" linux:"$OUT/vmlinuz" initrd:"$OUT/initramfs.cpio.gz"; do
  name=${s%%:*} file=${s#*:}
  sections+=(--add-section ".$name=$file" --change-section-vma ".$name=$(hex "$at")")
  at=$(roundup $((at + $(stat -Lc %s "$file"))))
done
objcopy "${sections[@]}" "$STUB" "$WORK/BOOTX64.EFI"
# objcopy stamps the PE header with the time of the build (TimeDateStamp, 8 bytes into the PE
# header that e_lfanew at 0x3c points to) and a checksum over it (88 bytes in; UEFI ignores it):
# both zeroed, so the same inputs give the same bytes.
pe=$(od -An -t u4 -j 60 -N 4 "$WORK/BOOTX64.EFI" | tr -d ' ')
for at in $((pe + 8)) $((pe + 88)); do
  printf '\0\0\0\0' | dd of="$WORK/BOOTX64.EFI" bs=1 seek="$at" conv=notrunc status=none
done

# The EFI system partition: FAT, sized to the UKI plus room, whole MiB. --invariant, a fixed
# volume id and fixed file times (mtools reads SOURCE_DATE_EPOCH), for the same reason.
uki_mib=$(( ($(stat -c %s "$WORK/BOOTX64.EFI") + 1048575) / 1048576 ))
esp_mib=$(( uki_mib + 4 < 16 ? 16 : uki_mib + 4 ))
export SOURCE_DATE_EPOCH=1704067200
mkfs.vfat -C -n COCOS-ESP -i 0c0c0e5f --invariant "$WORK/esp.img" $((esp_mib * 1024)) >/dev/null
mmd -i "$WORK/esp.img" ::/EFI ::/EFI/BOOT
mcopy -i "$WORK/esp.img" "$WORK/BOOTX64.EFI" ::/EFI/BOOT/BOOTX64.EFI

# The disk: 1 MiB for the primary GPT and alignment, the ESP, 1 MiB for the backup GPT. Fixed
# GUIDs, for the same reason.
truncate -s $(( (esp_mib + 2) * 1048576 )) "$WORK/disk.raw"
# (sgdisk -q writes no partition on a blank file, and says nothing: the result is checked.)
sgdisk -o -U 6a7c5b0e-4d1f-4c3a-9e2b-0c0c05d15c00 \
  -n 1:1MiB:+"${esp_mib}"MiB -t 1:ef00 -c 1:"EFI system partition" -u 1:6a7c5b0e-4d1f-4c3a-9e2b-0c0c05d15c01 \
  "$WORK/disk.raw" >/dev/null
sgdisk -i 1 "$WORK/disk.raw" | grep -q 'C12A7328-F81F-11D2-BA4B-00A0C93EC93B (EFI system partition)' ||
  { echo "build-disk: sgdisk wrote no EFI system partition" >&2; exit 1; }
dd if="$WORK/esp.img" of="$WORK/disk.raw" bs=1M seek=1 conv=notrunc,fsync status=none
qemu-img convert -q -f raw -O qcow2 "$WORK/disk.raw" "$DISK.tmp"
mv "$DISK.tmp" "$DISK"
printf '%s\n' "$CMDLINE" >"$OUT/disk-cmdline"
rm -rf "$WORK"
echo "build-disk: built $DISK ($(stat -c %s "$DISK") bytes; ESP ${esp_mib} MiB; command line: $CMDLINE)" >&2
