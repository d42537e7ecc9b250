// An empty variable means the setting's default, as the Go manager's environment library
// (caarlos0/env) gives an empty variable its envDefault: for every setting, under every name,
// except the two whose empty value means something of its own (docs/configuration.md says
// which and why). MANAGER_QEMU_MACHINE= is q35, as in Go.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { isDeepStrictEqual } from 'node:util';
import { loadConfig } from '../dist/config/load.js';
import { SETTING_LIST } from '../dist/config/settings.js';
import { FACTS } from './fake-host.mjs';
import { runCli } from './helpers.mjs';

/** Settings where `NAME=` is a value: no admin socket; an empty OVMF version (Go's default). */
const EMPTY_IS_A_VALUE = new Map([
  ['MANAGER_ADMIN_SOCKET', (c) => c.admin.socket],
  ['MANAGER_QEMU_OVMF_VERSION', (c) => c.qemu.ovmfVersion],
]);

test('every setting, under each of its names, takes its default when empty', () => {
  const defaults = loadConfig({}, FACTS.plain);
  const checked = [];
  for (const s of SETTING_LIST) {
    if (EMPTY_IS_A_VALUE.has(s.env)) continue;
    for (const name of s.names) {
      assert.deepEqual(loadConfig({ [name]: '' }, FACTS.plain), defaults, `${name}=`);
      checked.push(name);
    }
  }
  assert.ok(checked.length > 90, `${checked.length} names`);
});

test('the two exceptions keep the empty string, and no other setting gives an empty value a meaning of its own', () => {
  for (const [name, read] of EMPTY_IS_A_VALUE) assert.equal(read(loadConfig({ [name]: '' }, FACTS.plain)), '', name);
  const defaults = loadConfig({}, FACTS.plain);
  const differ = SETTING_LIST.filter((s) => !isDeepStrictEqual(loadConfig({ [s.env]: '' }, FACTS.plain), defaults)).map((s) => s.env);
  assert.deepEqual(differ.sort(), [...EMPTY_IS_A_VALUE.keys()].sort());
});

test('a Go-style env file with every setting left empty gives the default command line (-machine q35 included)', () => {
  const empty = Object.fromEntries(SETTING_LIST.filter((s) => !EMPTY_IS_A_VALUE.has(s.env)).flatMap((s) => s.names.map((n) => [n, ''])));
  const fromEmpty = runCli(['qemu-args'], empty);
  const fromNothing = runCli(['qemu-args'], {});
  assert.equal(fromEmpty.status, 0, fromEmpty.stderr);
  assert.equal(fromEmpty.stdout, fromNothing.stdout);
  const args = JSON.parse(fromEmpty.stdout);
  assert.deepEqual(args.slice(args.indexOf('-machine'), args.indexOf('-machine') + 2), ['-machine', 'q35']);
  assert.deepEqual(args.slice(args.indexOf('-cpu'), args.indexOf('-cpu') + 2), ['-cpu', 'EPYC']);
  assert.deepEqual(args.slice(args.indexOf('-monitor'), args.indexOf('-monitor') + 2), ['-monitor', 'pty']);
});
