#!/bin/sh
# udhcpc does nothing by itself: this applies the lease QEMU's user-mode DHCP server gives.
case "$1" in
  bound|renew)
    ip addr flush dev "$interface"
    ip addr add "$ip/${mask:-24}" dev "$interface"
    [ -n "$router" ] && ip route add default via "${router%% *}" dev "$interface"
    ;;
esac
exit 0
