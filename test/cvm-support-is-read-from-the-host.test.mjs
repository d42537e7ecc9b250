// SEV-SNP and TDX support is decided from the host as the Go manager decides it (the CPU flag in
// /proc/cpuinfo and the KVM module's parameter reading Y), each answer saying what is missing. The
// host is faked for real: /proc/cpuinfo and /sys/module mounted over in a namespace of the test's.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { cpuinfoWithFlags, fakeHostUnavailable, runOnFakeHost } from './fake-host.mjs';
import { ROOT } from './helpers.mjs';

const MODULE = pathToFileURL(path.join(ROOT, 'dist', 'host', 'cvm-host.js')).href;
const { SEV_SNP, TDX, cvmSupport, goTrimSpace } = await import(MODULE);

// What the daemon runs, in the namespace: both answers as JSON.
const PROBE = `import(${JSON.stringify(MODULE)}).then((m) => console.log(JSON.stringify({ snp: m.sevSnpEnabledOnHost(), tdx: m.tdxEnabledOnHost() })))`;

function onHost(host) {
  const r = runOnFakeHost(host, [process.execPath, '--input-type=module', '-e', PROBE]);
  assert.equal(r.status, 0, `probe failed: ${r.error ?? ''} ${r.stderr}`);
  return JSON.parse(r.stdout);
}

const NO_KVM_AMD = 'kvm_amd has no sev_snp parameter (no /sys/module/kvm_amd/parameters/sev_snp: kvm_amd is not loaded, or its kernel lacks the support)';
const NO_KVM_INTEL = 'kvm_intel has no tdx parameter (no /sys/module/kvm_intel/parameters/tdx: kvm_intel is not loaded, or its kernel lacks the support)';
const off = (...missing) => ({ enabled: false, missing });
const on = { enabled: true, missing: [] };

const HOSTS = [
  {
    name: 'a plain host: neither, each missing its flag and its parameter',
    host: { cpuinfo: cpuinfoWithFlags() },
    snp: off('/proc/cpuinfo has no sev_snp flag', NO_KVM_AMD),
    tdx: off('/proc/cpuinfo has no tdx_host_platform flag', NO_KVM_INTEL),
  },
  {
    name: 'an SEV-SNP host: the sev_snp flag and kvm_amd sev_snp=Y',
    host: { cpuinfo: cpuinfoWithFlags('sev', 'sev_es', 'sev_snp'), modules: { kvm_amd: { sev_snp: 'Y\n', sev: 'Y\n' } } },
    snp: on,
    tdx: off('/proc/cpuinfo has no tdx_host_platform flag', NO_KVM_INTEL),
  },
  {
    name: 'a TDX host: the tdx_host_platform flag and kvm_intel tdx=Y',
    host: { cpuinfo: cpuinfoWithFlags('tdx_host_platform'), modules: { kvm_intel: { tdx: 'Y\n' } } },
    snp: off('/proc/cpuinfo has no sev_snp flag', NO_KVM_AMD),
    tdx: on,
  },
  {
    name: 'the flag without the parameter (kvm_amd not loaded)',
    host: { cpuinfo: cpuinfoWithFlags('sev_snp') },
    snp: off(NO_KVM_AMD),
    tdx: off('/proc/cpuinfo has no tdx_host_platform flag', NO_KVM_INTEL),
  },
  {
    name: 'the flag with the parameter N',
    host: { cpuinfo: cpuinfoWithFlags('sev_snp', 'tdx_host_platform'), modules: { kvm_amd: { sev_snp: 'N\n' }, kvm_intel: { tdx: 'N\n' } } },
    snp: off("kvm_amd's sev_snp parameter is N"),
    tdx: off("kvm_intel's tdx parameter is N"),
  },
  {
    name: 'the parameter Y without the flag',
    host: { cpuinfo: cpuinfoWithFlags('sev'), modules: { kvm_amd: { sev_snp: 'Y\n' } } },
    snp: off('/proc/cpuinfo has no sev_snp flag'),
    tdx: off('/proc/cpuinfo has no tdx_host_platform flag', NO_KVM_INTEL),
  },
  {
    // Go looks for the text anywhere in the file, not for a whole word of the flags line.
    name: 'the flag text anywhere in /proc/cpuinfo counts, as in Go',
    host: { cpuinfo: `model name\t: Fake CPU sev_snp_like tdx_host_platformX\n`, modules: { kvm_amd: { sev_snp: 'Y' }, kvm_intel: { tdx: 'Y' } } },
    snp: on,
    tdx: on,
  },
];

const unavailable = fakeHostUnavailable();
for (const h of HOSTS) {
  test(`on a fake host, ${h.name}`, { skip: unavailable }, () => {
    assert.deepEqual(onHost(h.host), { snp: h.snp, tdx: h.tdx });
  });
}

test('the fake host goes with its namespace: the real /proc/cpuinfo is untouched', { skip: unavailable }, async () => {
  const { readFileSync } = await import('node:fs');
  const before = readFileSync('/proc/cpuinfo', 'latin1');
  onHost({ cpuinfo: cpuinfoWithFlags('sev_snp') });
  assert.equal(readFileSync('/proc/cpuinfo', 'latin1'), before);
  assert.doesNotMatch(before, /FakeVendor/);
});

test("the parameter is trimmed as Go's strings.TrimSpace trims, and Y is case-sensitive", () => {
  const flag = { bytes: Buffer.from('flags : sev_snp\n') };
  const param = (s) => cvmSupport(SEV_SNP, flag, { bytes: Buffer.from(s, 'utf8') });
  for (const yes of ['Y', 'Y\n', ' \tY\r\n', '\u0085Y\u00a0', '\u3000Y\u2028']) assert.equal(param(yes).enabled, true, JSON.stringify(yes));
  for (const no of ['y', '1', 'Yes', 'YY', '\ufeffY', 'Y\u200b', '']) assert.equal(param(no).enabled, false, JSON.stringify(no));
  assert.deepEqual(param('').missing, ["kvm_amd's sev_snp parameter is empty"]);
  assert.deepEqual(param('y\n').missing, ["kvm_amd's sev_snp parameter is y"]);
  assert.equal(goTrimSpace('\ufeff Y '), '\ufeff Y');
});

test('an unreadable file is named with its error', () => {
  const r = cvmSupport(TDX, { error: 'EACCES' }, { error: 'EACCES' });
  assert.deepEqual(r, off('/proc/cpuinfo cannot be read (EACCES)', "kvm_intel's tdx parameter cannot be read (/sys/module/kvm_intel/parameters/tdx: EACCES)"));
});
