// `policy inspect` reads CoRIMs written by another producer (the Veraison library, in
// test/fixtures/corim/), verifies their signature, and accepts the Go CoRIM 1.1.x tag form.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { encode, Tag } from 'cbor2';
import { ROOT, runCli } from './helpers.mjs';
import { tmpDir } from './daemon.mjs';
import { comidsOf, inspectPolicy } from '../dist/attestation/inspect.js';

const DATA = path.join(ROOT, 'test', 'fixtures', 'corim');
const file = (n) => path.join(DATA, n);

test('an unsigned Veraison CoRIM: id, CoMID and its sha-256 reference digest', () => {
  const r = runCli(['policy', 'inspect', file('corim-1.cbor')]);
  assert.equal(r.status, 0, r.stderr);
  const out = JSON.parse(r.stdout);
  assert.equal(out.format, 'corim');
  assert.equal(out.corim.id, "h'284e6c3e5d9f4f6b851f5a4247f243a7'");
  const comid = out.corim.comids[0];
  assert.equal(comid['1']['0'], "h'3f06af63a93c11e4979700505690773f'");
  const [env, measurements] = comid['4']['0'][0];
  assert.equal(env['0']['2'], 'ACME RoadRunner');
  assert.deepEqual(measurements[0]['1']['2'], [[1, "h'44aa336af4cb14a879432e53dd6571c7fa9bccafb75f488259262d6ea3a4d91b'"]]);
});

test('the other unsigned Veraison CoRIMs decode', () => {
  for (const n of ['corim-2.cbor', 'unsigned-good-corim.cbor']) {
    const out = inspectPolicy(fs.readFileSync(file(n)));
    assert.equal(out.format, 'corim', n);
    assert.ok(out.corim.comids.length >= 1, n);
  }
});

test('a signed Veraison CoRIM verifies with its key, and not with another or once tampered', () => {
  const ok = runCli(['policy', 'inspect', file('signed-good-corim.cbor'), '--key', file('ec-p256.jwk')]);
  assert.equal(ok.status, 0, ok.stderr);
  const out = JSON.parse(ok.stdout);
  assert.equal(out.signature, 'verified');
  assert.equal(out.contentType, 'application/rim+cbor');

  const dir = tmpDir('cocos-corim-');
  const otherKey = path.join(dir, 'other.jwk');
  const jwk = JSON.parse(fs.readFileSync(file('ec-p256.jwk'), 'utf8'));
  // The same curve, another point: swap in a freshly generated public key.
  const { publicKey } = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
  fs.writeFileSync(otherKey, JSON.stringify({ ...publicKey.export({ format: 'jwk' }), kid: jwk.kid }));
  const wrong = runCli(['policy', 'inspect', file('signed-good-corim.cbor'), '--key', otherKey]);
  assert.equal(wrong.status, 1);
  assert.match(wrong.stderr, /signature does not verify/);

  const tampered = Buffer.from(fs.readFileSync(file('signed-good-corim.cbor')));
  tampered[200] ^= 0x01;
  const t = path.join(dir, 'tampered.cbor');
  fs.writeFileSync(t, tampered);
  const bad = runCli(['policy', 'inspect', t, '--key', file('ec-p256.jwk')]);
  assert.equal(bad.status, 1);
});

test('a bare CoMID with integrity registers (the PCR form) decodes, registers keyed by index', () => {
  const out = inspectPolicy(fs.readFileSync(file('comid-integrity-registers.cbor')));
  assert.equal(out.format, 'comid');
  const regs = out.comid['4']['0'][0][1][0]['1']['14'];
  assert.deepEqual(regs['0'][0], [1, "h'44aa336af4cb14a879432e53dd6571c7fa9bccafb75f488259262d6ea3a4d91b'"]);
});

test('the Go CoRIM 1.1.x form (tag bytes d9 01 fa inside the byte string) reads like the draft form', () => {
  const comid = new Map([[1, new Map([[0, 'tag-1']])], [4, new Map([[0, []]])]]);
  const comidBytes = encode(comid);
  const goForm = new Map([[0, 'id'], [1, [Uint8Array.from([0xd9, 0x01, 0xfa, ...comidBytes])]]]);
  const draftForm = new Map([[0, 'id'], [1, [new Tag(506, comidBytes)]]]);
  assert.deepEqual(comidsOf(goForm), comidsOf(draftForm));
  assert.equal(comidsOf(goForm)[0].get(1).get(0), 'tag-1');
});

test('policy inspect: a missing file is exit 2 with one line', () => {
  const r = runCli(['policy', 'inspect', '/nonexistent.cbor']);
  assert.equal(r.status, 2);
  assert.match(r.stderr, /^cocos-manager: cannot read "\/nonexistent.cbor": ENOENT\n$/);
});

