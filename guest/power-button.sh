#!/bin/busybox sh
# Run by acpid on the ACPI power button: a clean, logged shutdown of the test guest.
exec >/dev/ttyS0 2>&1
echo "cocos-guest: power button pressed: shutting down"
umount /env /etc/certs 2>/dev/null
sync
echo "cocos-guest: powering off"
poweroff -f
