// Every combination of the four TLS settings, on the gRPC port and on the HTTP endpoint, does what
// docs/tls.md says: what Go's gRPC server does, or stricter. Each row runs the daemon (or tries to)
// with certificates made by openssl and probes it with real clients: plain, TLS without a client
// certificate, and TLS with certificates from the test CA and from another CA.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { Daemon, fakeQemuEnv, tmpDir } from './daemon.mjs';
import { ROOT, runCli } from './helpers.mjs';
import { makePki } from './pki.mjs';
import { probeBoth } from './tls-probes.mjs';

/**
 * What a row must do, on both ports. `refused:X`: the start stops, naming _X. Go's own outcome is
 * in the table of docs/tls.md; these are ours, written here independently of it.
 */
const ROWS = [
  // SERVER_CERT, SERVER_KEY, SERVER_CA_CERTS, CLIENT_CA_CERTS
  ['----', 'plain'],
  ['---L', 'refused:CLIENT_CA_CERTS'],
  ['--S-', 'refused:SERVER_CA_CERTS'],
  ['--SL', 'refused:CLIENT_CA_CERTS'],
  ['-K--', 'refused:SERVER_CERT'],
  ['-K-L', 'refused:SERVER_CERT'],
  ['-KS-', 'refused:SERVER_CERT'],
  ['-KSL', 'refused:SERVER_CERT'],
  ['C---', 'refused:SERVER_KEY'],
  ['C--L', 'refused:SERVER_KEY'],
  ['C-S-', 'refused:SERVER_KEY'],
  ['C-SL', 'refused:SERVER_KEY'],
  ['CK--', 'tls'],
  ['CK-L', 'mutual:client-ca-certs'],
  ['CKS-', 'mutual:system-roots'],
  ['CKSL', 'mutual:client-ca-certs'],
];

/** The cell of docs/tls.md's "cocos-manager" column for each outcome. */
const IN_THE_DOC = {
  plain: '**plain text**',
  tls: '**TLS**',
  'mutual:client-ca-certs': '**mutual TLS, CLIENT_CA_CERTS**',
  'mutual:system-roots': '**mutual TLS, system roots**',
};

let pki;
let sslCertDir;
before(() => {
  pki = makePki(tmpDir('cocos-pki-'));
  sslCertDir = tmpDir('cocos-no-roots-');
});

/** The four settings of a row for one prefix: the server's certificate from `ca`, CA settings as the row says. */
function settings(prefix, row) {
  const [c, k, s, l] = row;
  return {
    [`${prefix}SERVER_CERT`]: c === 'C' ? pki.file('server.pem') : '',
    [`${prefix}SERVER_KEY`]: k === 'K' ? pki.file('server.key') : '',
    [`${prefix}SERVER_CA_CERTS`]: s === 'S' ? pki.file('ca.pem') : '',
    [`${prefix}CLIENT_CA_CERTS`]: l === 'L' ? pki.file('ca.pem') : '',
  };
}

/**
 * The system's roots for the daemon are `otherca` alone (SSL_CERT_FILE, and an empty SSL_CERT_DIR):
 * where it checks against them, a certificate from `otherca` gets in and one from `ca` (the
 * row's SERVER_CA_CERTS and CLIENT_CA_CERTS) does not.
 */
const systemRootsAreOtherCa = () => ({ SSL_CERT_FILE: pki.file('otherca.pem'), SSL_CERT_DIR: sslCertDir });

/** The clients each row is probed with. */
const CLIENTS = () => {
  const tls = (id) => ({ tls: true, ca: pki.read('ca.pem'), ...(id ? { key: pki.read(`${id}.key`), cert: pki.read(`${id}.pem`) } : {}) });
  return {
    plain: {},
    'tls, no certificate': tls(),
    'tls, certificate from ca': tls('client'),
    'tls, certificate from otherca': tls('stranger'),
  };
};

/** Which of CLIENTS get in, by outcome. */
const SERVED = {
  plain: ['plain'],
  tls: ['tls, no certificate', 'tls, certificate from ca', 'tls, certificate from otherca'],
  'mutual:client-ca-certs': ['tls, certificate from ca'],
  'mutual:system-roots': ['tls, certificate from otherca'],
};

for (const [row, outcome] of ROWS) {
  test(`${row}: ${outcome}, on both ports`, async () => {
    if (outcome.startsWith('refused:')) {
      // Each port alone: the gRPC settings are checked before the HTTP ones.
      for (const prefix of ['MANAGER_GRPC_', 'MANAGER_HTTP_']) {
        const r = runCli(['serve'], fakeQemuEnv(tmpDir(), { ...settings(prefix, row), ...systemRootsAreOtherCa() }));
        assert.equal(r.status, 2, `${prefix}: ${r.stderr}`);
        const lines = r.stderr.trim().split('\n');
        assert.equal(lines.length, 1, r.stderr);
        assert.match(lines[0], new RegExp(`^cocos-manager: .*${prefix}${outcome.slice('refused:'.length)}\\b`));
      }
      return;
    }
    const d = await Daemon.listening(fakeQemuEnv(tmpDir(), { ...settings('MANAGER_GRPC_', row), ...settings('MANAGER_HTTP_', row), ...systemRootsAreOtherCa() }));
    try {
      const clientAuth = outcome.startsWith('mutual:') ? outcome.slice('mutual:'.length) : 'none';
      for (const line of [d.grpcLine, d.httpLine]) {
        assert.equal(line.tls, outcome !== 'plain', line.msg);
        assert.equal(line.client_auth, clientAuth, line.msg);
      }
      for (const [name, client] of Object.entries(CLIENTS())) {
        const expected = SERVED[outcome].includes(name) ? 'served' : /^refused/;
        for (const [port, got] of Object.entries(await probeBoth(d, client))) {
          if (expected === 'served') assert.equal(got, 'served', `${port}, ${name}`);
          else assert.match(got, expected, `${port}, ${name}`);
        }
      }
    } finally {
      await d.stop();
    }
  });
}

test('docs/tls.md has one row for each combination, saying what the daemon does', () => {
  const doc = fs.readFileSync(path.join(ROOT, 'docs', 'tls.md'), 'utf8');
  const documented = new Map();
  for (const line of doc.split('\n')) {
    const cells = line.split('|').slice(1, -1).map((c) => c.trim());
    if (cells.length !== 8 || !cells.slice(0, 4).every((c) => c === 'set' || c === '—')) continue;
    const key = cells.slice(0, 4).map((c, i) => (c === 'set' ? 'CKSL'[i] : '-')).join('');
    assert.equal(documented.has(key), false, `two rows for ${key}`);
    documented.set(key, cells[6]);
  }
  assert.equal(documented.size, 16);
  for (const [row, outcome] of ROWS) {
    const cell = documented.get(row);
    if (outcome.startsWith('refused:')) assert.equal(cell, `**start refused**, naming \`_${outcome.slice('refused:'.length)}\``, row);
    else assert.equal(cell, IN_THE_DOC[outcome], row);
  }
});

test('with no root in the system where Go looks, SERVER_CA_CERTS alone stops the start (Go would let no client in)', () => {
  const r = runCli(['serve'], fakeQemuEnv(tmpDir(), { ...settings('MANAGER_GRPC_', 'CKS-'), SSL_CERT_FILE: path.join(sslCertDir, 'none.pem'), SSL_CERT_DIR: sslCertDir }));
  assert.equal(r.status, 2, r.stderr);
  assert.match(r.stderr.trim(), /^cocos-manager: MANAGER_GRPC_SERVER_CA_CERTS without MANAGER_GRPC_CLIENT_CA_CERTS asks clients for a certificate from the system's roots .* set MANAGER_GRPC_CLIENT_CA_CERTS$/);
});

test('check warns that SERVER_CA_CERTS alone lets in a certificate from any CA the system trusts', () => {
  const r = runCli(['check'], fakeQemuEnv(tmpDir(), settings('MANAGER_GRPC_', 'CKS-')));
  assert.match(r.stdout, /^WARN\s+client authentication\s+ManagerService requires a client certificate, from any CA of the system's roots .*set MANAGER_GRPC_CLIENT_CA_CERTS to your own CAs only$/m);
});
