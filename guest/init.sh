#!/bin/busybox sh
# /init of the cocos-manager test guest: network from QEMU's user-mode stack, the two 9P shares,
# and a stand-in agent on TCP 7002 that reports what the guest received.
/bin/busybox --install -s /bin
mkdir -p /proc /sys /dev /tmp /run /env /etc/certs
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
# console=null leaves no console: speak to the serial port directly (QEMU's stdout with -nographic).
exec >/dev/ttyS0 2>&1 </dev/null
echo "cocos-guest: init started, kernel $(uname -r)"

for m in $(cat /modules.order); do
  insmod "/modules/$m" || echo "cocos-guest: insmod $m failed"
done

ip link set lo up
IFACE=""
for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do
  [ -e /sys/class/net/eth0 ] && IFACE=eth0 && break
  sleep 0.2
done
[ -n "$IFACE" ] || echo "cocos-guest: no network interface"
ip link set eth0 up
udhcpc -i eth0 -s /udhcpc.sh -q -n -t 5 -T 1 || {
  echo "cocos-guest: DHCP failed, using QEMU's user-mode defaults"
  ip addr add 10.0.2.15/24 dev eth0
  ip route add default via 10.0.2.2
}

mount -t 9p -o trans=virtio,version=9p2000.L,ro env_share /env || echo "cocos-guest: env_share mount failed"
mount -t 9p -o trans=virtio,version=9p2000.L,ro certs_share /etc/certs || echo "cocos-guest: certs_share mount failed"

# The ACPI power button (QMP system_powerdown): busybox acpid reads it from the button's input
# device (modules button + evdev) and runs /etc/acpi/PWRF/00000080, which powers the guest off.
if [ -e /dev/input/event0 ]; then
  acpid -c /etc/acpi -l /dev/ttyS0 && echo "cocos-guest: acpid listening for the power button"
else
  echo "cocos-guest: no input device for the power button"
fi

# The agent: one report per connection, for as long as the guest runs.
nc -ll -p 7002 -e /agent.sh &
# A hostile workload, only when the environment asks for one (tests of what a guest can reach).
/probe.sh &
echo "COCOS-GUEST-READY"
while true; do sleep 3600; done
