// Each setting is declared once (src/config/settings.ts) and read by one mechanism
// (src/config/setting.ts): plain env objects in, a configuration or a ConfigError out. Proves the
// mechanism on small declarations (other names and their conflicts, empty means the default or
// not, defaults parsed by the grammar, every kind of grammar with its bounds), the real
// declaration's C-bit alias end to end, and that the Config type is inferred from the
// declaration strictly enough that a misspelt setting does not compile.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import ts from 'typescript';
import { ROOT, runCli } from './helpers.mjs';
import { ConfigError, readSettings, setting, settingsIn } from '../dist/config/setting.js';
import * as g from '../dist/config/grammar.js';
import { SETTINGS, SETTING_LIST } from '../dist/config/settings.js';
import { loadConfig } from '../dist/config/load.js';
import { FACTS } from './fake-host.mjs';

const decl = {
  port: setting({ env: 'T_PORT', grammar: g.port, default: '7001', doc: 'a port' }),
  host: setting({ env: 'T_HOST', grammar: g.text, default: 'localhost', doc: 'a host' }),
  group: {
    cbit: setting({ env: 'T_CBITPOS', aliases: ['T_CBIT_POS'], grammar: g.count, default: '51', doc: 'C-bit' }),
    pair: [
      setting({ env: 'T_A', grammar: g.text, default: 'a', doc: 'first' }),
      setting({ env: 'T_B', grammar: g.boolean, default: 'false', doc: 'second' }),
    ],
  },
};

/** The ConfigError of `fn`, asserted to name `variable` and to be one line. */
function configError(fn, variable) {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof ConfigError, String(err));
    assert.equal(err.variable, variable);
    assert.doesNotMatch(err.message, /\n/);
    return err.message;
  }
  assert.fail(`no error for ${variable}`);
}

test('a declaration yields a configuration of its own shape, defaults parsed by their grammar', () => {
  assert.deepEqual(readSettings(decl, {}).config, { port: 7001, host: 'localhost', group: { cbit: 51, pair: ['a', false] } });
  const { config, given } = readSettings(decl, { T_PORT: ' 8080 ', T_A: 'x', T_B: 'yes' });
  assert.deepEqual(config, { port: 8080, host: 'localhost', group: { cbit: 51, pair: ['x', true] } });
  assert.deepEqual(given(decl.port), { name: 'T_PORT', text: ' 8080 ' });
  assert.deepEqual(given(decl.host), { name: 'T_HOST', text: undefined });
  assert.deepEqual(settingsIn(decl).map((s) => s.env), ['T_PORT', 'T_HOST', 'T_CBITPOS', 'T_A', 'T_B']);
});

test('a bad value is one line naming the variable, the text and what is expected', () => {
  const message = configError(() => readSettings(decl, { T_PORT: '0' }), 'T_PORT');
  assert.equal(message, 'invalid T_PORT="0": expected a port number in 1..65535');
});

test('a default its own grammar refuses is a programming error, not a ConfigError', () => {
  const bad = { x: setting({ env: 'T_X', grammar: g.port, default: '70000', doc: 'x' }) };
  assert.throws(() => readSettings(bad, {}), (err) => !(err instanceof ConfigError) && /default of T_X/.test(err.message));
});

test('an other name alone sets the setting; the error of its bad value names it', () => {
  const { config, given } = readSettings(decl, { T_CBIT_POS: '47' });
  assert.equal(config.group.cbit, 47);
  assert.deepEqual(given(decl.group.cbit), { name: 'T_CBIT_POS', text: '47' });
  assert.match(configError(() => readSettings(decl, { T_CBIT_POS: 'x' }), 'T_CBIT_POS'), /^invalid T_CBIT_POS="x": expected a non-negative integer$/);
});

test('both names set to one value (however written) is that value; to two values, one line naming both', () => {
  assert.equal(readSettings(decl, { T_CBITPOS: '47', T_CBIT_POS: ' 47' }).config.group.cbit, 47);
  const message = configError(() => readSettings(decl, { T_CBITPOS: '51', T_CBIT_POS: '47' }), 'T_CBITPOS');
  assert.equal(message, 'conflicting T_CBITPOS="51" and T_CBIT_POS="47": two names of one setting; set one of them');
});

test('an empty other name is unset where empty means the default, so it conflicts with nothing', () => {
  assert.equal(readSettings(decl, { T_CBITPOS: '47', T_CBIT_POS: '' }).config.group.cbit, 47);
  assert.equal(readSettings(decl, { T_CBITPOS: '', T_CBIT_POS: '' }).config.group.cbit, 51);
});

test('"empty means the default" is the grammar\'s unless the setting says otherwise', () => {
  assert.equal(readSettings(decl, { T_PORT: '' }).config.port, 7001, 'typed: empty is the default');
  assert.equal(readSettings(decl, { T_HOST: '' }).config.host, 'localhost', 'text too, as caarlos0/env gives an empty variable its envDefault');
  const flipped = {
    host: setting({ env: 'T_HOST', grammar: g.text, default: 'localhost', emptyMeansDefault: false, doc: 'h' }),
    port: setting({ env: 'T_PORT', grammar: g.port, default: '7001', emptyMeansDefault: false, doc: 'p' }),
  };
  assert.equal(flipped.host.emptyMeansDefault, false);
  assert.equal(readSettings(flipped, { T_PORT: '1' }).config.host, 'localhost');
  assert.equal(readSettings(flipped, { T_HOST: '', T_PORT: '1' }).config.host, '');
  configError(() => readSettings(flipped, { T_PORT: '' }), 'T_PORT');
});

/** [grammar, accepted texts with their values, refused texts, what the refusal says]. */
const GRAMMARS = [
  ['boolean', g.boolean, [['true', true], ['F', false], [' yes ', true], ['0', false]], ['tRUE', 'maybe', ''], /true or false/],
  ['onOff', g.onOff, [['true', 'on'], ['off', 'off'], ['0', 'off']], ['ro'], /true or false/],
  ['orAuto(boolean)', g.orAuto(g.boolean), [['auto', 'auto'], [' auto ', 'auto'], ['false', false]], ['Auto', 'maybe'], /true or false.*, or auto$/],
  ['port', g.port, [['1', 1], ['65535', 65535]], ['0', '65536', '-5', '2.5', '0x10'], /1\.\.65535/],
  ['listenPort', g.listenPort, [['0', 0]], ['65536'], /0\.\.65535/],
  ['integer(2, 5)', g.integer(2, 5, 'two to five'), [['2', 2], ['5', 5]], ['1', '6'], /two to five/],
  ['portRange', g.portRange, [['6100-6200', { first: 6100, last: 6200 }], [' 7 - 7 ', { first: 7, last: 7 }]], ['6100', '6200-6100', '0-10', '65000-70000'], /1 <= first <= last <= 65535/],
  ['idRange', g.idRange, [['1-4294967294', { first: 1, last: 4294967294 }]], ['0-5', '1-4294967295'], /numeric ids/],
  ['qemuSize', g.qemuSize, [['4096', '4096'], [' 1.5G ', '1.5G'], ['4g', '4g']], ['1.5', '30GB', '0G', '2048 M'], /like 2048M/],
  ['byteSize(1M)', g.byteSize(1 << 20, '1M'), [['8M', 8 << 20], ['1', 1 << 20], ['1024K', 1 << 20]], ['1023K'], /at least 1M/],
  ['ratio', g.ratio, [['0', 0], ['1.0', 1], ['0.25', 0.25]], ['1.5', '-0.1', 'half'], /0\.\.1/],
  ['positiveDuration', g.positiveDuration, [['1m30s', 90_000], ['300ms', 300]], ['0', '10', '-1s'], /positive Go duration/],
  ['nonNegativeDuration', g.nonNegativeDuration, [['0', 0], ['10s', 10_000]], ['10', '-1s'], /0 \(off\)/],
  ['boundedDuration(1m)', g.boundedDuration(60_000, '1m'), [['1m', 60_000]], ['0', '61s'], /at most 1m/],
  ['oneOf', g.oneOf(['corim', 'json']), [['json', 'json'], [' corim ', 'corim']], ['xml', 'JSON'], /one of corim, json/],
  ['hexBytes(2)', g.hexBytes(2), [['0xABcd', 'abcd'], ['', '']], ['abc', 'abcdef', 'zz00'], /exactly 2 bytes/],
  ['uint64', g.uint64, [['0x30000', 0x30000n], ['18446744073709551615', 0xffffffffffffffffn]], ['18446744073709551616', '-1', '0x'], /64-bit/],
  ['localAllowList', g.localAllowList, [['tcp/8443, udp/127.0.0.1:123', [{ protocol: 'tcp', address: undefined, port: 8443 }, { protocol: 'udp', address: '127.0.0.1', port: 123 }]], ['', []]], ['tcp/0', 'sctp/1', 'tcp/300.1.1.1:1'], /comma-separated list/],
  ['nonBlankText', g.nonBlankText('a path'), [[' x ', ' x ']], ['', '  '], /a path/],
  ['unprivilegedUser', g.unprivilegedUser, [[' cocos-qemu ', 'cocos-qemu'], ['1000', '1000']], ['root', '0', '00', '#1000', 'a b', ''], /not root/],
  ['groupOrEmpty', g.groupOrEmpty, [['', ''], ['kvm', 'kvm']], ['a b'], /group name/],
  ['unixSocketPath', g.unixSocketPath, [['', ''], ['/run/a.sock', '/run/a.sock']], [`/${'a'.repeat(107)}`], /at most 107 bytes/],
  ['absoluteUrl', g.absoluteUrl, [['http://localhost:4318', 'http://localhost:4318']], ['not a url', '/v1/traces', ''], /absolute URL/],
  ['slogLevel', g.slogLevel, [['info', 'info'], ['DEBUG', 'debug'], ['Warn', 'warn'], ['INFO+2', 'warn'], ['INFO+4', 'warn'], ['WARN+1', 'error'], ['DEBUG-4', 'trace'], ['ERROR+4', 'fatal'], ['ERROR+5', 'silent'], ['ıNFO', 'info'], ['INFO+0', 'info'], ['info-1', 'info'], ['INFO-4', 'debug'], [' error ', 'error']], ['verbose', 'INFO+', 'INFO++2', 'INFO+2.5', 'INFO 2', 'INFO+9223372036854775808', ''], /Go's slog takes it \(INFO\+2, DEBUG-4\)/],
  ['boundedDurationOrZero(1m)', g.boundedDurationOrZero(60_000, '1m', 'as X'), [['0', 0], ['1m', 60_000]], ['61s', '-1s', '5'], /at most 1m.*or 0 \(as X\)/],
  ['mapped(oneOf, Number)', g.mapped(g.oneOf(['0', '1', '2', '3']), Number), [['2', 2]], ['4'], /one of 0, 1, 2, 3/],
];

for (const [name, grammar, accepted, refused, says] of GRAMMARS) {
  test(`grammar ${name}: what it accepts and what it refuses, read through a declaration`, () => {
    const d = { v: setting({ env: 'T_V', grammar, default: accepted[0][0], emptyMeansDefault: false, doc: name }) };
    for (const [text, value] of accepted) assert.deepEqual(readSettings(d, { T_V: text }).config.v, value, JSON.stringify(text));
    for (const text of refused) {
      const message = configError(() => readSettings(d, { T_V: text }), 'T_V');
      assert.ok(message.startsWith(`invalid T_V=${JSON.stringify(text)}: expected `), message);
      assert.match(message, says);
    }
  });
}

test('text is kept as written, blanks included; every grammar says that empty means the default', () => {
  assert.equal(g.text.parse(' a b '), ' a b ');
  for (const typed of [g.text, g.nonBlankText('x'), g.boolean, g.port, g.portRange, g.qemuSize, g.positiveDuration, g.hexBytes(8), g.orAuto(g.boolean), g.slogLevel]) {
    assert.equal(typed.emptyMeansDefault, true);
  }
});

test('every declared default is a value of its own grammar, and loadConfig({}) is those defaults, SEV-SNP and TDX decided from the host (and the tracing derived from them)', () => {
  for (const s of SETTING_LIST) assert.doesNotThrow(() => s.grammar.parse(s.default), s.env);
  const declared = readSettings(SETTINGS, {}).config;
  assert.deepEqual([declared.qemu.enableSevSnp, declared.qemu.enableTdx], ['auto', 'auto']);
  for (const [host, snp, tdx] of [[FACTS.plain, false, false], [FACTS.sevSnp, true, false], [FACTS.tdx, false, true]]) {
    // tracing is derived from the COCOS_JAEGER_* settings and the OTEL_* variables (config/tracing.ts).
    const { cvm, tracing, ...loaded } = loadConfig({}, host);
    assert.deepEqual(loaded, { ...declared, qemu: { ...declared.qemu, enableSevSnp: snp, enableTdx: tdx } });
    assert.equal(cvm.kind, snp ? 'sev-snp' : tdx ? 'tdx' : 'plain');
    assert.equal(tracing.url, 'http://localhost:4318/v1/traces');
  }
  assert.equal(loadConfig({}, FACTS.plain).qemu.hostFwdRange.last, 6200);
});

test('the C-bit position is read under the Go manager\'s name too, and two different values stop the start', () => {
  assert.equal(loadConfig({ MANAGER_QEMU_SEV_SNP_CBIT_POS: '47' }, FACTS.sevSnp).qemu.sevSnp.cbitpos, 47);
  assert.equal(loadConfig({ MANAGER_QEMU_SEV_SNP_CBITPOS: '47', MANAGER_QEMU_SEV_SNP_CBIT_POS: '47' }, FACTS.sevSnp).qemu.sevSnp.cbitpos, 47);
  const ok = runCli(['qemu-args'], { MANAGER_QEMU_ENABLE_SEV_SNP: 'true', MANAGER_QEMU_SEV_SNP_CBIT_POS: '47' });
  assert.equal(ok.status, 0, ok.stderr);
  assert.ok(JSON.parse(ok.stdout).some((a) => a.includes('cbitpos=47')), ok.stdout);
  const r = runCli(['qemu-args'], { MANAGER_QEMU_SEV_SNP_CBITPOS: '51', MANAGER_QEMU_SEV_SNP_CBIT_POS: '47' });
  assert.equal(r.status, 2, r.stderr);
  assert.equal(r.stdout, '');
  assert.deepEqual(r.stderr.split('\n').filter(Boolean), [
    'cocos-manager: conflicting MANAGER_QEMU_SEV_SNP_CBITPOS="51" and MANAGER_QEMU_SEV_SNP_CBIT_POS="47": two names of one setting; set one of them',
  ]);
});

/** TypeScript's errors for each body, compiled (in one program) against src/config/types.ts with the project's options. */
function typeErrors(bodies) {
  const files = new Map(bodies.map((body, i) => [
    path.join(ROOT, `src/config/__type-probe-${i}__.ts`),
    `import type { Config } from './types.js';\ndeclare const c: Config;\n${body}\nexport {};\n`,
  ]));
  const options = { strict: true, noEmit: true, target: ts.ScriptTarget.ES2022, module: ts.ModuleKind.NodeNext, moduleResolution: ts.ModuleResolutionKind.NodeNext, types: ['node'], skipLibCheck: true };
  const host = ts.createCompilerHost(options);
  const { getSourceFile, fileExists } = host;
  host.getSourceFile = (name, ...rest) => (files.has(name) ? ts.createSourceFile(name, files.get(name), ts.ScriptTarget.ES2022) : getSourceFile.call(host, name, ...rest));
  host.fileExists = (name) => files.has(name) || fileExists.call(host, name);
  const program = ts.createProgram([...files.keys()], options, host);
  return [...files.keys()].map((name) => ts.getPreEmitDiagnostics(program, program.getSourceFile(name)).map((d) => ts.flattenDiagnosticMessageText(d.messageText, ' ')).join('\n'));
}

test('Config is inferred from the declaration: a misspelt setting or a wrong type does not compile; SEV-SNP and TDX are decided booleans', () => {
  const [right, misspelt, wrongType, wrongChoice, decided, auto] = typeErrors([
    'const r: { first: number; last: number } = c.qemu.hostFwdRange; const t: [string, string, string, string] = c.attestation.tdx.rtmr; const u: number = c.isolation.uidRange.first; void r; void t; void u;',
    'void c.qemu.hostFwdRnage;',
    'const p: string = c.grpc.port; void p;',
    "const l: typeof c.logLevel = 'verbose'; void l;",
    "const s: boolean = c.qemu.enableSevSnp; const t: boolean = c.qemu.enableTdx; void s; void t;",
    "const a: typeof c.qemu.enableSevSnp = 'auto'; void a;",
  ]);
  assert.equal(right, '');
  assert.match(misspelt, /hostFwdRnage/);
  assert.match(wrongType, /not assignable to type 'string'/);
  assert.match(wrongChoice, /'"verbose"' is not assignable/);
  // Everything downstream reads SEV-SNP and TDX decided: auto never reaches it.
  assert.equal(decided, '');
  assert.match(auto, /not assignable to type 'boolean'/);
});
