// Every setting the loader knows is documented in docs/configuration.md and listed in
// cocos-manager.env, and every MANAGER_*/COCOS_* name those files (and docs/qemu-argv.md) mention
// is one the loader knows: a setting cannot be added, renamed or removed without its docs.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { ROOT } from './helpers.mjs';
import { SPECS } from '../dist/config/load.js';

const SETTINGS = new Set(Object.keys(SPECS));

// Names documented as NOT settings of the daemon (docs/configuration.md, "Other environment variables").
const NOT_SETTINGS = new Set(['COCOS_STARTUP_TRACE', 'COCOS_NODE_FLAGS']);

const read = (rel) => fs.readFileSync(path.join(ROOT, rel), 'utf8');

// Whole MANAGER_... and COCOS_... words; a word ending in "_" is a prefix (MANAGER_GRPC_).
function mentionedNames(text) {
  return new Set(text.match(/(?<![A-Za-z0-9_])(?:MANAGER|COCOS)_[A-Z0-9_]*/g) ?? []);
}

function mentions(text, name) {
  return new RegExp(`(?<![A-Za-z0-9_])${name}(?![A-Za-z0-9_])`).test(text);
}

/** The KEY=VALUE lines of an env file, as systemd's EnvironmentFile= reads this one. */
function envFileKeys(text) {
  const keys = [];
  for (const line of text.split('\n')) {
    if (line.trim() === '' || line.startsWith('#')) continue;
    const m = /^([A-Z_][A-Z0-9_]*)=/.exec(line);
    assert.ok(m, `cocos-manager.env: not KEY=VALUE: ${line}`);
    keys.push(m[1]);
  }
  return keys;
}

function unknown(names) {
  return [...names].filter((n) => {
    if (SETTINGS.has(n) || NOT_SETTINGS.has(n)) return false;
    if (n.endsWith('_')) return ![...SETTINGS].some((s) => s.startsWith(n));
    return true;
  });
}

test('the loader knows a sensible number of settings (the import worked)', () => {
  assert.ok(SETTINGS.size > 50, `only ${SETTINGS.size} settings in SPECS`);
});

test('docs/configuration.md documents every setting of the loader', () => {
  const doc = read('docs/configuration.md');
  const missing = [...SETTINGS].filter((name) => !mentions(doc, name));
  assert.deepEqual(missing, [], `settings missing from docs/configuration.md: ${missing.join(', ')}`);
});

test('docs/configuration.md gives each setting a table row of its own', () => {
  const doc = read('docs/configuration.md');
  const rows = new Set([...doc.matchAll(/^\| `([A-Z0-9_]+)` \|/gm)].map((m) => m[1]));
  const missing = [...SETTINGS].filter((name) => !rows.has(name));
  assert.deepEqual(missing, [], `settings without a row in docs/configuration.md: ${missing.join(', ')}`);
});

test('cocos-manager.env lists every setting of the loader, once', () => {
  const keys = envFileKeys(read('cocos-manager.env'));
  const missing = [...SETTINGS].filter((name) => !keys.includes(name));
  assert.deepEqual(missing, [], `settings missing from cocos-manager.env: ${missing.join(', ')}`);
  const twice = keys.filter((k, i) => keys.indexOf(k) !== i);
  assert.deepEqual(twice, [], `listed twice in cocos-manager.env: ${twice.join(', ')}`);
});

for (const file of ['docs/configuration.md', 'docs/qemu-argv.md', 'cocos-manager.env']) {
  test(`every MANAGER_*/COCOS_* name in ${file} is known to the loader`, () => {
    const bad = unknown(mentionedNames(read(file)));
    assert.deepEqual(bad, [], `${file} mentions names the loader does not know: ${bad.join(', ')}`);
  });
}

test('the names documented as not being settings really are not settings', () => {
  for (const name of NOT_SETTINGS) {
    assert.ok(!SETTINGS.has(name), `${name} is a setting now: remove it from NOT_SETTINGS`);
    assert.ok(mentions(read('docs/configuration.md'), name), `${name} is not explained in docs/configuration.md`);
  }
});
