#!/bin/sh
# Test hook: this guest plays a hostile workload against the manager when its environment file
# asks for it (AWS_ENDPOINT_URL=cocos-probe). It tries what any guest can: the host's loopback
# through QEMU's user-mode network at 10.0.2.2.
#   AGENT_CVM_CA_URL       an HTTP URL to GET (the manager's /health)
#   AGENT_CVM_GRPC_URL     HOST:PORT of the manager's gRPC port
#   AWS_SECRET_ACCESS_KEY  base64 of raw HTTP/2 bytes to send there (a gRPC call, prior knowledge)
#   AWS_REGION             optional second URL to GET (the host's LAN address)
#   AWS_ACCESS_KEY_ID      optional HOST:PORT of another VM's forwarded agent port to read from
# The results go to /tmp/probe.out, which the stand-in agent adds to its report.
env_value() { sed -n "s/^$1=//p" /env/environment | head -1; }
[ "$(env_value AWS_ENDPOINT_URL)" = "cocos-probe" ] || exit 0

get() {
  # busybox 1.35's wget crashes with -S or -T: bound it with timeout instead.
  out=$(timeout 15 wget -q -O - "$1" 2>&1)
  echo "$2_exit=$?"
  echo "$out" | head -3 | sed "s/^/$2: /"
}

{
  echo "== probe"
  get "$(env_value AGENT_CVM_CA_URL)" http
  second=$(env_value AWS_REGION)
  [ -n "$second" ] && get "$second" http_lan
  target=$(env_value AGENT_CVM_GRPC_URL)
  env_value AWS_SECRET_ACCESS_KEY | base64 -d >/tmp/grpc-request.bin
  # The server keeps an HTTP/2 connection open: what it answered within the bound is the answer.
  timeout 10 nc "${target%:*}" "${target##*:}" </tmp/grpc-request.bin >/tmp/grpc-response.bin 2>/dev/null
  echo "grpc_response_bytes=$(wc -c </tmp/grpc-response.bin)"
  echo "grpc_response_base64=$(base64 -w 0 /tmp/grpc-response.bin)"
  neighbour=$(env_value AWS_ACCESS_KEY_ID)
  if [ -n "$neighbour" ]; then
    timeout 10 nc "${neighbour%:*}" "${neighbour##*:}" </dev/null >/tmp/neighbour.out 2>/dev/null
    echo "neighbour_bytes=$(wc -c </tmp/neighbour.out)"
    echo "neighbour_first_line=$(head -1 /tmp/neighbour.out)"
  fi
  # The env share (mounted read-only at /env by init.sh): can the guest make it writable and
  # write to the host's state directory through it? QEMU's readonly=on must refuse the write.
  mount -o remount,rw /env 2>/dev/null
  echo "share_remount_exit=$?"
  echo "written by the guest" 2>/dev/null >/env/guest-was-here
  echo "share_write_exit=$?"
  if [ -e /env/guest-was-here ]; then echo "share_file_appeared=1"; else echo "share_file_appeared=0"; fi
  echo "probe_done=1"
} >/tmp/probe.out.tmp 2>&1
mv /tmp/probe.out.tmp /tmp/probe.out
echo "cocos-guest: probe done"
