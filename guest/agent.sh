#!/bin/sh
# Stand-in for the Cocos agent: what this guest received, as sections a test can parse.
echo "== environment"
cat /env/environment 2>/dev/null
echo "== certs"
for f in /etc/certs/*; do
  [ -f "$f" ] || continue
  echo "$(basename "$f") $(wc -c <"$f") $(sha256sum "$f" | cut -d' ' -f1)"
done
echo "== cmdline"
cat /proc/cmdline
[ -f /tmp/probe.out ] && cat /tmp/probe.out
echo "== end"
