#!/bin/sh
# Test hook: this guest plays a hostile workload against the manager when its environment file
# asks for it (AWS_ENDPOINT_URL=cocos-probe). It tries what any guest can: the host's loopback
# through QEMU's user-mode network at 10.0.2.2.
#   AGENT_CVM_CA_URL       an HTTP URL to GET (the manager's /health)
#   AGENT_CVM_GRPC_URL     HOST:PORT of the manager's gRPC port
#   AWS_SECRET_ACCESS_KEY  base64 of raw HTTP/2 bytes to send there (a gRPC RemoveVm, prior knowledge),
#                          once read back, then 40 times sent and dropped at once (send-then-reset)
#   AWS_REGION             optional: a second URL to GET (http://..., the host's other address), or
#                          base64 of a raw gRPC CreateVm sent 30 times the same way
#   AWS_ACCESS_KEY_ID      optional HOST:PORT of another VM's forwarded agent port to read from
# The results go to /tmp/probe.out, which the stand-in agent adds to its report. "refused" counts
# the attempts whose connect() was refused (busybox nc says "Connection refused").
env_value() { sed -n "s/^$1=//p" /env/environment | head -1; }
[ "$(env_value AWS_ENDPOINT_URL)" = "cocos-probe" ] || exit 0

get() {
  # busybox 1.35's wget crashes with -S or -T: bound it with timeout instead.
  out=$(timeout 15 wget -q -O - "$1" 2>&1)
  echo "$2_exit=$?"
  echo "$out" | head -3 | sed "s/^/$2: /"
}

# burst NAME FILE COUNT: sends FILE's bytes to the gRPC target COUNT times, each connection
# dropped as soon as the bytes are out; counts the connects refused.
burst() {
  refused=0
  i=0
  while [ "$i" -lt "$3" ]; do
    if timeout 2 nc "${target%:*}" "${target##*:}" <"$2" 2>&1 >/dev/null | grep -q "refused"; then refused=$((refused + 1)); fi
    i=$((i + 1))
  done
  echo "$1_refused=$refused"
}

{
  echo "== probe"
  get "$(env_value AGENT_CVM_CA_URL)" http
  second=$(env_value AWS_REGION)
  case "$second" in
    http*) get "$second" http_lan ;;
    ?*) echo "$second" | base64 -d >/tmp/grpc-create.bin ;;
  esac
  target=$(env_value AGENT_CVM_GRPC_URL)
  env_value AWS_SECRET_ACCESS_KEY | base64 -d >/tmp/grpc-request.bin
  # The server keeps an HTTP/2 connection open: what it answered within the bound is the answer.
  timeout 10 nc "${target%:*}" "${target##*:}" </tmp/grpc-request.bin >/tmp/grpc-response.bin 2>/tmp/grpc-error.txt
  echo "grpc_exit=$?"
  echo "grpc_error=$(head -1 /tmp/grpc-error.txt)"
  echo "grpc_response_bytes=$(wc -c </tmp/grpc-response.bin)"
  echo "grpc_response_base64=$(base64 -w 0 /tmp/grpc-response.bin)"
  burst remove_bursts /tmp/grpc-request.bin 40
  [ -f /tmp/grpc-create.bin ] && burst create_bursts /tmp/grpc-create.bin 30
  neighbour=$(env_value AWS_ACCESS_KEY_ID)
  if [ -n "$neighbour" ]; then
    timeout 10 nc "${neighbour%:*}" "${neighbour##*:}" </dev/null >/tmp/neighbour.out 2>/tmp/neighbour-error.txt
    echo "neighbour_exit=$?"
    echo "neighbour_error=$(head -1 /tmp/neighbour-error.txt)"
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
