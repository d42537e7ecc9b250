// The guest firewall's nft script, from plain values (src/isolation/firewall-rules.ts): one table
// replaced atomically; only the VM uids' sockets are looked at; local destinations only; the
// host's nameservers and the operator's exceptions open; TCP's first SYN and UDP refused.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { firewallTableName, guestFirewallScript, resolvConfNameservers } from '../dist/isolation/firewall-rules.js';
import { loadConfig } from '../dist/config/load.js';
import { FACTS } from './fake-host.mjs';

test('the script replaces the table in one transaction and refuses the VM uids\' connections to local addresses', () => {
  const script = guestFirewallScript({
    table: 'cocos_manager_0123456789ab',
    uids: { first: 1_900_000_000, last: 1_900_000_099 },
    nameservers: ['127.0.0.53', '::1', '127.0.0.53'],
    allow: [{ protocol: 'tcp', port: 8443 }, { protocol: 'udp', address: '127.0.0.1', port: 123 }, { protocol: 'tcp', address: '::1', port: 9000 }],
  });
  assert.equal(script, [
    'table inet cocos_manager_0123456789ab',
    'delete table inet cocos_manager_0123456789ab',
    'table inet cocos_manager_0123456789ab {',
    '\tchain guest_output {',
    '\t\ttype filter hook output priority filter; policy accept;',
    '\t\tmeta skuid != 1900000000-1900000099 accept',
    '\t\tfib daddr type != local accept',
    '\t\tip daddr 127.0.0.53 udp dport 53 accept',
    '\t\tip daddr 127.0.0.53 tcp dport 53 accept',
    '\t\tip6 daddr ::1 udp dport 53 accept',
    '\t\tip6 daddr ::1 tcp dport 53 accept',
    '\t\ttcp dport 8443 accept',
    '\t\tip daddr 127.0.0.1 udp dport 123 accept',
    '\t\tip6 daddr ::1 tcp dport 9000 accept',
    '\t\ttcp flags & (fin | syn | rst | ack) == syn reject with tcp reset',
    '\t\tmeta l4proto { udp, udplite, sctp, dccp } reject',
    '\t}',
    '}',
    '',
  ].join('\n'));
});

test('one table per state directory', () => {
  const hash = (t) => `h${t.length}${t.replace(/\W/g, '')}`.padEnd(16, '0');
  assert.notEqual(firewallTableName('/var/lib/a', hash), firewallTableName('/var/lib/bb', hash));
  assert.match(firewallTableName('/var/lib/cocos-manager', () => 'abcdef0123456789'), /^cocos_manager_abcdef012345$/);
});

test('resolv.conf nameservers: in order, once each, zone index and comments dropped', () => {
  assert.deepEqual(resolvConfNameservers('# generated\nnameserver 127.0.0.53\noptions edns0\nnameserver fe80::1%eth0\n nameserver 10.0.0.1 # office\nnameserver 127.0.0.53\nsearch example\n'), ['127.0.0.53', 'fe80::1', '10.0.0.1']);
});

test('MANAGER_GUEST_ALLOWED_LOCAL_PORTS: ports, addresses and bad items named', () => {
  assert.deepEqual(loadConfig({ MANAGER_GUEST_ALLOWED_LOCAL_PORTS: 'tcp/8443, udp/127.0.0.1:123,tcp/[::1]:9000' }, FACTS.plain).isolation.allowLocal, [
    { protocol: 'tcp', address: undefined, port: 8443 },
    { protocol: 'udp', address: '127.0.0.1', port: 123 },
    { protocol: 'tcp', address: '::1', port: 9000 },
  ]);
  for (const bad of ['tcp/0', 'sctp/80', 'tcp/127.0.0.1', 'tcp/300.0.0.1:80', 'tcp/80; flush ruleset', 'udp/[::1:53']) {
    assert.throws(() => loadConfig({ MANAGER_GUEST_ALLOWED_LOCAL_PORTS: bad }, FACTS.plain), (e) => e.variable === 'MANAGER_GUEST_ALLOWED_LOCAL_PORTS' && e.message.includes(JSON.stringify(bad.trim())), bad);
  }
  assert.throws(() => loadConfig({ MANAGER_VM_UID_RANGE: '100-50' }, FACTS.plain), (e) => e.variable === 'MANAGER_VM_UID_RANGE');
  assert.throws(() => loadConfig({ MANAGER_VM_UID_RANGE: '1900000000-1900000004', MANAGER_MAX_VMS: '10' }, FACTS.plain), /at least MANAGER_MAX_VMS \(10\) ids/);
});
