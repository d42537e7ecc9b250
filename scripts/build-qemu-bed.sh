#!/usr/bin/env bash
# Builds the newer-QEMU test bed under build/qemu-11/: a minimal Debian trixie tree holding
# qemu-system-x86 and ovmf from trixie-backports (never installed on the host), and a wrapper,
# build/qemu-11/qemu-system-x86_64, that runs that QEMU with host paths.
#
# Run as root. Idempotent: a second run only checks the wrapper still answers --version.
# Where the host has no apt, or its Debian mirror cannot be reached, it prints one line, writes
# build/qemu-11/UNAVAILABLE with the reason (the tests read it and skip) and exits 0.
set -euo pipefail
cd "$(dirname "$0")/.."
BED=build/qemu-11
TREE=$BED/tree
WRAPPER=$BED/qemu-system-x86_64
MARKER=$BED/UNAVAILABLE
STAMP=$TREE/.cocos-bed-complete
PACKAGES=(qemu-system-x86 ovmf)
SUITE=trixie
mkdir -p "$BED"
BED_ABS=$(cd "$BED" && pwd)
TREE_ABS=$BED_ABS/tree

# One build at a time: a concurrent `make test` waits for this one rather than racing it.
exec 9>"$BED/.lock"
flock -w 900 9 || { echo "build-qemu-bed: another build holds $BED/.lock" >&2; exit 1; }

unavailable() {
  echo "$1" >"$MARKER"
  echo "build-qemu-bed: $1; tests that need QEMU 11 will be skipped" >&2
  exit 0
}

# The wrapper: QEMU looks for its modules in the path it was built with, where the host's own
# QEMU keeps modules from another build (QEMU_MODULE_DIR is not honoured), so the tree's module
# directory is bind-mounted over that path in a private mount namespace. Every step execs in
# place, so the PID the caller sees is QEMU's. The libraries go in LD_LIBRARY_PATH rather than
# --library-path so that QEMU's path is the second word of /proc/<pid>/cmdline, where the
# daemon's recovery looks for the binary's name (as it does behind sudo); the daemon's vectors
# make QEMU start no helper program the variable could reach.
write_wrapper() {
  local tmp=$WRAPPER.tmp
  cat >"$tmp" <<EOF
#!/bin/sh
# QEMU from Debian trixie-backports, run from $TREE_ABS (made by scripts/build-qemu-bed.sh).
T='$TREE_ABS'
M=/usr/lib/x86_64-linux-gnu/qemu
# Without root, a user namespace mapped to root lets the bind mount happen.
if [ "\$(id -u)" = 0 ]; then U=; else U=--map-root-user; fi
exec unshare --mount --propagation private \$U sh -c '
  T=\$1; M=\$2; shift 2
  if [ -d "\$M" ]; then mount --bind "\$T\$M" "\$M" || exit 125; fi
  export LD_LIBRARY_PATH="\$T/lib/x86_64-linux-gnu:\$T/usr/lib/x86_64-linux-gnu"
  exec "\$T/lib64/ld-linux-x86-64.so.2" "\$T/usr/bin/qemu-system-x86_64" -L "\$T/usr/share/qemu" "\$@"' \\
  qemu-system-x86_64 "\$T" "\$M" "\$@"
EOF
  chmod 0755 "$tmp"
  if cmp -s "$tmp" "$WRAPPER"; then rm -f "$tmp"; else mv "$tmp" "$WRAPPER"; fi
}

if [ -f "$STAMP" ]; then
  write_wrapper
  if v=$("$WRAPPER" --version 2>/dev/null | head -1) && [ -n "$v" ]; then
    rm -f "$MARKER"
    echo "build-qemu-bed: up to date ($v)"
    exit 0
  fi
  echo "build-qemu-bed: the cached tree does not run; rebuilding" >&2
fi

command -v apt-get >/dev/null 2>&1 || unavailable "no apt on this host"
[ "$(id -u)" -eq 0 ] || { echo "build-qemu-bed: run as root (debootstrap and chroot)" >&2; exit 1; }

# The Debian mirror the host already uses: the URI of the first enabled source for the host's
# own release (deb822 .sources or one-line .list), never the security archive.
codename=$(. /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-}")
mirror=
shopt -s nullglob
for f in /etc/apt/sources.list.d/*.sources; do
  mirror=$(awk -v cn="$codename" '
    BEGIN { RS = ""; FS = "\n" }
    {
      uri = ""; suites = ""; deb = 0
      for (i = 1; i <= NF; i++) {
        if ($i ~ /^Types:/ && $i ~ /(^|[ \t])deb([ \t]|$)/) deb = 1
        if ($i ~ /^URIs:/) { split($i, a, /[ \t]+/); uri = a[2] }
        if ($i ~ /^Suites:/) suites = $i
      }
      if (deb && uri != "" && suites ~ ("[ \t]" cn "([ \t]|$)")) { print uri; exit }
    }' "$f")
  [ -n "$mirror" ] && break
done
if [ -z "$mirror" ]; then
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    mirror=$(awk -v cn="$codename" '$1 == "deb" {
      i = 2; if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
      if ($(i + 1) == cn) { print $i; exit } }' "$f")
    [ -n "$mirror" ] && break
  done
fi
shopt -u nullglob
[ -n "$mirror" ] || unavailable "no Debian mirror for '$codename' in the host's apt sources"
mirror=${mirror%/}

# Reachability, bounded: apt's own downloader, so no other tool is assumed.
probe=$(mktemp)
if ! timeout 60 /usr/lib/apt/apt-helper download-file "$mirror/dists/$SUITE-backports/Release" "$probe" >/dev/null 2>&1; then
  rm -f "$probe"
  unavailable "the Debian mirror $mirror does not serve $SUITE-backports (unreachable?)"
fi
rm -f "$probe"

bash scripts/install-system-deps.sh debootstrap

# Refuse to delete a tree something is still mounted in.
remove_tree() {
  local dir=$1
  [ -e "$dir" ] || return 0
  local abs
  abs=$(cd "$dir" && pwd)
  if findmnt -rn -o TARGET | grep -q "^$abs\(/\|$\)"; then
    echo "build-qemu-bed: $abs has mounts under it; unmount them first" >&2
    exit 1
  fi
  rm -rf "$dir"
}

start=$SECONDS
work=$BED/tree.tmp
remove_tree "$work"
remove_tree "$TREE"
mkdir -p "$work"
work_abs=$(cd "$work" && pwd)
echo "build-qemu-bed: building a $SUITE tree with ${PACKAGES[*]} from $SUITE-backports ($mirror)" >&2

# Everything that mounts (debootstrap mounts proc and sys; the chroot gets proc) runs in a
# private mount namespace, so no mount outlives it, even when a step fails half-way.
unshare --mount --propagation private bash -euo pipefail -s "$work_abs" "$mirror" "$SUITE" "${PACKAGES[@]}" <<'EOS'
T=$1; MIRROR=$2; SUITE=$3; shift 3
debootstrap --variant=minbase --components=main "$SUITE" "$T" "$MIRROR" >"$T.debootstrap.log" 2>&1 \
  || { tail -20 "$T.debootstrap.log" >&2; exit 1; }
rm -f "$T.debootstrap.log"
cat >"$T/etc/apt/sources.list" <<EOF
deb $MIRROR $SUITE main
deb $MIRROR $SUITE-backports main
EOF
cp -L /etc/resolv.conf "$T/etc/resolv.conf" 2>/dev/null || true
# No service starts inside the tree.
printf '#!/bin/sh\nexit 101\n' >"$T/usr/sbin/policy-rc.d"; chmod 0755 "$T/usr/sbin/policy-rc.d"
mountpoint -q "$T/proc" || mount -t proc proc "$T/proc"
export DEBIAN_FRONTEND=noninteractive
chroot "$T" apt-get update -qq
chroot "$T" apt-get install -y -qq -o Dpkg::Use-Pty=0 --no-install-recommends -t "$SUITE-backports" "$@" >/dev/null
chroot "$T" apt-get clean
umount "$T/proc"
EOS

# Smaller tree: apt lists, docs, man pages and locales are not needed to run QEMU.
rm -rf "$work"/var/lib/apt/lists/* "$work"/var/cache/apt/*.bin \
  "$work"/usr/share/doc/* "$work"/usr/share/man/* "$work"/usr/share/locale/* "$work"/usr/share/info/*
chroot "$work" dpkg-query -W -f='${Package} ${Version}\n' "${PACKAGES[@]}" >"$work/.cocos-bed-complete"
mv "$work" "$TREE"
write_wrapper
v=$("$WRAPPER" --version | head -1) || { echo "build-qemu-bed: the built QEMU does not run" >&2; exit 1; }
rm -f "$MARKER"
echo "build-qemu-bed: built $BED in $((SECONDS - start)) s, $(du -sh "$TREE" | cut -f1): $v" >&2
