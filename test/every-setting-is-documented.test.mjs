// Every setting declared in src/config/settings.ts is documented in docs/configuration.md (a row
// with its default, and its other names), listed in cocos-manager.env (with its doc line) and
// covered by the README's tables; and every MANAGER_*/COCOS_* name the docs mention is one the
// declaration knows: a setting cannot be added, renamed or removed without its docs.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { ROOT } from './helpers.mjs';
import { SETTING_LIST } from '../dist/config/settings.js';

const SETTINGS = new Map(SETTING_LIST.map((s) => [s.env, s]));
const ALIASES = new Map(SETTING_LIST.flatMap((s) => s.aliases.map((a) => [a, s])));
const KNOWN = new Set([...SETTINGS.keys(), ...ALIASES.keys()]);

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

/** The KEY=VALUE lines of an env file, as systemd's EnvironmentFile= reads this one, with the comment above each. */
function envFileEntries(text) {
  const entries = [];
  let comment = [];
  for (const line of text.split('\n')) {
    if (line.startsWith('# ---')) continue; // a section's title
    if (line.startsWith('#')) {
      comment.push(line.replace(/^#\s?/, ''));
      continue;
    }
    if (line.trim() === '') {
      comment = [];
      continue;
    }
    const m = /^([A-Z_][A-Z0-9_]*)=/.exec(line);
    assert.ok(m, `cocos-manager.env: not KEY=VALUE: ${line}`);
    entries.push({ key: m[1], comment: comment.join(' ') });
    comment = [];
  }
  return entries;
}

function unknown(names) {
  return [...names].filter((n) => {
    if (KNOWN.has(n) || NOT_SETTINGS.has(n)) return false;
    if (n.endsWith('_')) return ![...KNOWN].some((s) => s.startsWith(n));
    return true;
  });
}

/** The cells of the table rows whose first cell starts with a MANAGER_/COCOS_ name (in backticks or not). */
function tableRows(text) {
  return [...text.matchAll(/^\| `?((?:MANAGER|COCOS)_[^|]*?)`? \|(.*)\|\s*$/gm)].map((m) => [m[1], ...m[2].split('|').map((c) => c.trim())]);
}

/** Whether a Default cell shows `value`: as written (in backticks or not), or "(empty...)" for the empty string. */
function showsDefault(cell, value) {
  if (value === '') return cell.startsWith('(empty');
  return cell === value || cell.startsWith(`\`${value}\``);
}

test('the declaration holds a sensible number of settings (the import worked)', () => {
  assert.ok(SETTINGS.size > 50, `only ${SETTINGS.size} settings declared`);
});

test('no two settings share a name, nor a setting an alias', () => {
  const names = SETTING_LIST.flatMap((s) => s.names);
  const twice = names.filter((n, i) => names.indexOf(n) !== i);
  assert.deepEqual(twice, []);
});

test('docs/configuration.md gives each setting a table row of its own, with the declared default', () => {
  const rows = new Map(tableRows(read('docs/configuration.md')).map((cells) => [cells[0], cells]));
  const missing = [...SETTINGS.keys()].filter((name) => !rows.has(name));
  assert.deepEqual(missing, [], `settings without a row in docs/configuration.md: ${missing.join(', ')}`);
  const wrong = SETTING_LIST.filter((s) => !showsDefault(rows.get(s.env)[2], s.default)).map((s) => `${s.env}: ${rows.get(s.env)[2]} (declared ${JSON.stringify(s.default)})`);
  assert.deepEqual(wrong, [], `defaults in docs/configuration.md that are not the declared ones:\n${wrong.join('\n')}`);
});

test('docs/configuration.md names each other name of a setting in that setting\'s row', () => {
  const rows = new Map(tableRows(read('docs/configuration.md')).map((cells) => [cells[0], cells.join(' | ')]));
  const missing = [...ALIASES].filter(([alias, s]) => !mentions(rows.get(s.env) ?? '', alias)).map(([alias]) => alias);
  assert.deepEqual(missing, [], `aliases not documented in their setting's row: ${missing.join(', ')}`);
});

test('cocos-manager.env lists every setting once, by its own name, under its declared doc line', () => {
  const entries = envFileEntries(read('cocos-manager.env'));
  const keys = entries.map((e) => e.key);
  const missing = [...SETTINGS.keys()].filter((name) => !keys.includes(name));
  assert.deepEqual(missing, [], `settings missing from cocos-manager.env: ${missing.join(', ')}`);
  const twice = keys.filter((k, i) => keys.indexOf(k) !== i);
  assert.deepEqual(twice, [], `listed twice in cocos-manager.env: ${twice.join(', ')}`);
  const notOwn = keys.filter((k) => !SETTINGS.has(k));
  assert.deepEqual(notOwn, [], `cocos-manager.env lists names that are not a setting's own: ${notOwn.join(', ')}`);
  const otherDoc = entries.filter((e) => e.comment !== SETTINGS.get(e.key).doc).map((e) => `${e.key}: "${e.comment}" (declared "${SETTINGS.get(e.key).doc}")`);
  assert.deepEqual(otherDoc, [], `comments in cocos-manager.env that are not the declared doc line:\n${otherDoc.join('\n')}`);
});

/**
 * The settings a README table row covers: "A / _B" (A, and A with its last words replaced by
 * _B), "PREFIX*" (every setting under it), "NAME0..3" (NAME0 to NAME3), "A, B".
 */
function coveredBy(cell) {
  const covered = new Set();
  for (const part of cell.split(/,\s*/)) {
    const [base, ...suffixes] = part.split(/\s*\/\s*/);
    const star = /^([A-Z0-9_]+)\*$/.exec(base);
    const span = /^([A-Z0-9_]*?)(\d+)\.\.(\d+)$/.exec(base);
    if (star) for (const s of SETTINGS.keys()) if (s.startsWith(star[1])) covered.add(s);
    if (span) for (let i = Number(span[2]); i <= Number(span[3]); i++) covered.add(`${span[1]}${i}`);
    if (!star && !span) covered.add(base);
    const words = base.split('_');
    for (const suffix of suffixes) {
      for (let keep = words.length; keep > 0; keep--) covered.add(`${words.slice(0, keep).join('_')}${suffix}`);
    }
  }
  return [...covered].filter((n) => SETTINGS.has(n));
}

test('the README\'s configuration tables cover every setting, and a row of one setting shows its default', () => {
  const rows = tableRows(read('README.md'));
  const covered = new Set(rows.flatMap(([cell]) => coveredBy(cell)));
  const missing = [...SETTINGS.keys()].filter((name) => !covered.has(name));
  assert.deepEqual(missing, [], `settings no README table row covers: ${missing.join(', ')}`);
  const wrong = rows
    .filter(([cell]) => SETTINGS.has(cell))
    .filter(([cell, , def]) => !showsDefault(def, SETTINGS.get(cell).default))
    .map(([cell, , def]) => `${cell}: ${def} (declared ${JSON.stringify(SETTINGS.get(cell).default)})`);
  assert.deepEqual(wrong, [], `defaults in README.md that are not the declared ones:\n${wrong.join('\n')}`);
});

for (const file of ['docs/configuration.md', 'docs/qemu-argv.md', 'cocos-manager.env', 'README.md']) {
  test(`every MANAGER_*/COCOS_* name in ${file} is a declared setting or alias`, () => {
    const bad = unknown(mentionedNames(read(file)));
    assert.deepEqual(bad, [], `${file} mentions names the declaration does not know: ${bad.join(', ')}`);
  });
}

test('the names documented as not being settings really are not settings', () => {
  for (const name of NOT_SETTINGS) {
    assert.ok(!KNOWN.has(name), `${name} is a setting now: remove it from NOT_SETTINGS`);
    assert.ok(mentions(read('docs/configuration.md'), name), `${name} is not explained in docs/configuration.md`);
  }
});
