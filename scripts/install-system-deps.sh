#!/usr/bin/env bash
# Installs the Debian packages cocos-manager and its tests need, only those missing.
# Idempotent; a no-op on a machine that has them all.
set -euo pipefail

need=()
command -v qemu-system-x86_64 >/dev/null 2>&1 || need+=(qemu-system-x86)
[ -f /usr/share/OVMF/OVMF_CODE.fd ] || need+=(ovmf)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
# The MANAGER_QEMU_USE_SUDO end-to-end test runs the daemon as a system user with a sudoers rule.
command -v sudo >/dev/null 2>&1 || need+=(sudo)
# Guest isolation: the connect-time firewall (nft) and the switch to a VM's uid (setpriv, util-linux).
command -v nft >/dev/null 2>&1 || [ -x /usr/sbin/nft ] || need+=(nftables)
command -v setpriv >/dev/null 2>&1 || need+=(util-linux)
# VM disks (MANAGER_QEMU_ENABLE_DISK): qemu-img makes each VM's overlay on the source.
command -v qemu-img >/dev/null 2>&1 || need+=(qemu-utils)
for pkg in "$@"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || need+=("$pkg")
done

[ ${#need[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "install-system-deps: missing Debian packages: ${need[*]}; run as root or: sudo apt-get install ${need[*]}" >&2
  exit 1
fi
echo "install-system-deps: installing ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
