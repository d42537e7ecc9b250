// `cocos-manager check` on each QEMU of qemu-versions.mjs names exactly what that binary lacks
// for SEV-SNP and TDX (QEMU 7.2: sev-snp-guest, tdx-guest; QEMU 11.1 as Debian builds it:
// igvm-cfg), and never calls a device or object the binary lists missing. A QEMU that cannot
// list its devices (modules from another build) is reported as such, not as lacking them.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { runCli } from './helpers.mjs';
import { tmpDir } from './daemon.mjs';
import { BED_TREE, NEW_QEMU, QEMUS } from './qemu-versions.mjs';

const SNP = { MANAGER_QEMU_ENABLE_SEV_SNP: 'true', MANAGER_QEMU_ENABLE_HOST_DATA: 'true', MANAGER_QEMU_HOST_DATA: Buffer.alloc(32, 1).toString('base64') };
const TDX = { MANAGER_QEMU_ENABLE_SEV_SNP: 'false', MANAGER_QEMU_ENABLE_TDX: 'true' };

/** What each tested version lacks, by major version (Debian's builds: no IGVM in either). */
const LACKS = {
  7: { snp: ['igvm-cfg', 'sev-snp-guest'], tdx: ['tdx-guest'] },
  11: { snp: ['igvm-cfg'], tdx: [] },
};

function check(bin, env) {
  const r = runCli(['check'], { MANAGER_QEMU_BIN_PATH: bin, MANAGER_QEMU_HOST_FWD_RANGE: '47100-47101', ...env }, { timeout: 60_000 });
  const rows = [];
  for (const line of r.stdout.split('\n')) {
    const m = /^(PASS|FAIL|WARN)\s+(qemu (?:object|device)s? ?(\S*)|qemu binary|sev-snp-guest host-data)\s{2,}(.*)$/.exec(line);
    if (m) rows.push({ status: m[1], check: m[2].trim(), name: m[3], detail: m[4] });
  }
  return { ...r, rows };
}

/** The binary's own answer to `-object help` / `-device help`. */
function listing(bin, kind) {
  const r = spawnSync(bin, [`-${kind}`, 'help'], { encoding: 'utf8', timeout: 20_000 });
  assert.equal(r.status, 0, r.stderr);
  return r.stdout;
}
const lists = (bin, kind, name) =>
  kind === 'object' ? new RegExp(`^\\s*${name}\\s*$`, 'm').test(listing(bin, 'object')) : listing(bin, 'device').includes(`"${name}"`);

for (const qemu of QEMUS) describe(`check on ${qemu.name}`, { skip: qemu.skip }, () => {
  for (const [mode, env] of [['snp', SNP], ['tdx', TDX]]) {
    test(`${mode === 'snp' ? 'SEV-SNP' : 'TDX'}: names what this QEMU lacks and nothing it has`, () => {
      const r = check(qemu.bin, { ...qemu.env, ...env });
      assert.equal(r.status, 1, r.stdout + r.stderr); // no SEV-SNP/TDX hardware here
      const binary = r.rows.find((row) => row.check === 'qemu binary');
      assert.equal(binary?.status, 'PASS', r.stdout);
      assert.ok(binary.detail.includes(qemu.versionLine), binary.detail);
      const qemuRows = r.rows.filter((row) => /^qemu (object|device) /.test(row.check));
      assert.ok(qemuRows.some((row) => row.check === 'qemu device virtio-9p-pci'), r.stdout);
      // Every verdict agrees with what the binary itself lists.
      for (const row of qemuRows) {
        const kind = row.check.split(' ')[1];
        assert.equal(row.status === 'PASS', lists(qemu.bin, kind, row.name), `${row.status} ${row.check}`);
      }
      const lacking = qemuRows.filter((row) => row.status === 'FAIL').map((row) => row.name).sort();
      const expected = LACKS[qemu.major]?.[mode];
      if (expected) assert.deepEqual(lacking, expected, r.stdout);
      if (mode === 'snp' && !lacking.includes('sev-snp-guest')) {
        assert.equal(r.rows.find((row) => row.check === 'sev-snp-guest host-data')?.status, 'PASS', r.stdout);
      }
    });
  }
});

// The trap the bed's wrapper avoids: QEMU 11 started straight through its loader loads the
// host's QEMU 7.2 modules from the path it was built with, and `-device help` aborts.
const HOST_MODULES = '/usr/lib/x86_64-linux-gnu/qemu';
const hostHasModules = fs.existsSync(HOST_MODULES) && fs.readdirSync(HOST_MODULES).some((f) => f.endsWith('.so'));
test('check on a QEMU that cannot list its devices says so, and calls no device missing',
  { skip: NEW_QEMU.skip || (!hostHasModules && `no QEMU modules in ${HOST_MODULES} to clash with`) }, () => {
    const dir = tmpDir('cocos-raw-qemu-');
    try {
      const raw = path.join(dir, 'qemu-system-x86_64');
      const libs = `${BED_TREE}/lib/x86_64-linux-gnu:${BED_TREE}/usr/lib/x86_64-linux-gnu`;
      fs.writeFileSync(raw, `#!/bin/sh\nexec '${BED_TREE}/lib64/ld-linux-x86-64.so.2' --library-path '${libs}' '${BED_TREE}/usr/bin/qemu-system-x86_64' -L '${BED_TREE}/usr/share/qemu' "$@"\n`, { mode: 0o755 });
      const r = check(raw, TDX);
      assert.equal(r.status, 1);
      const devices = r.rows.find((row) => row.check === 'qemu devices');
      assert.equal(devices?.status, 'FAIL', r.stdout);
      assert.match(devices.detail, /`-device help` failed \((killed by SIGABRT|exit code \d+): .*module/);
      assert.deepEqual(r.rows.filter((row) => row.check.startsWith('qemu device ')), [], 'no device called missing');
      assert.equal(r.rows.find((row) => row.check === 'qemu object tdx-guest')?.status, 'PASS', r.stdout);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
