// In a confidential guest every virtio device gets VIRTIO_F_ACCESS_PLATFORM from QEMU itself: a
// machine with confidential-guest-support makes iommu_platform=on (and, where the command line
// leaves it open, disable-legacy=on) the default of every virtio device (QEMU 6.0 and later,
// machine_run_board_init). So the 9P devices of the per-VM vector, which name neither, get it
// as the network card does (docs/qemu-argv.md, element 14).
// Shown without SEV hardware on both QEMUs: a sev-guest object under TCG gets as far as the
// devices (sev-snp-guest and tdx-guest stop earlier: "KVM required"). The devices' own check
// then tells what QEMU gave them: a device that also offers the legacy interface
// (disable-legacy=off) is refused for VIRTIO_F_IOMMU_PLATFORM, which nothing on the command line
// asked for; without confidential-guest-support the same device is accepted, with
// iommu_platform off. The machine itself fails later (no KVM): that failure is asserted as well,
// so a start that stops before the devices cannot pass for one that accepted them.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { ROOT } from './helpers.mjs';
import { tmpDir } from './daemon.mjs';
import { QEMUS } from './qemu-versions.mjs';
import { FACTS } from './fake-host.mjs';

const { loadConfig } = await import(path.join(ROOT, 'dist/config/load.js'));
const { buildQemuArgs } = await import(path.join(ROOT, 'dist/qemu/args.js'));

const CGS = ['-machine', 'confidential-guest-support=sev0', '-object', 'sev-guest,id=sev0,cbitpos=51,reduced-phys-bits=1'];
const REFUSED = 'VIRTIO_F_IOMMU_PLATFORM was supported by neither legacy nor transitional device';
// What each QEMU says once the devices are realized and the machine is found unable to run the
// confidential guest (no KVM): 7.2 aborts on an assertion, 11.1 names the accelerator.
const LATER = /Assertion `machine->cgs->ready' failed|accelerator does not support confidential guest sev-guest/;

/** The 9P arguments of the per-VM vector (-fsdev and -device pairs), as the manager builds them. */
function sharesArgs(dir) {
  const q = loadConfig({ MANAGER_QEMU_ENABLE_SEV_SNP: 'false', MANAGER_QEMU_ENABLE_KVM: 'false' }, FACTS.plain).qemu;
  for (const d of ['certs', 'env']) fs.mkdirSync(path.join(dir, d));
  const argv = buildQemuArgs(q, { hostPort: 6100, ovmfVarsFile: '/nonexistent', shares: { certsDir: path.join(dir, 'certs'), envDir: path.join(dir, 'env') } });
  const out = [];
  for (let i = 0; i < argv.length; i++) {
    if ((argv[i] === '-fsdev' || argv[i] === '-device') && /^(local,|virtio-9p-pci,)/.test(argv[i + 1])) out.push(argv[i], argv[i + 1]);
  }
  assert.equal(out.filter((a) => a.startsWith('virtio-9p-pci,')).length, 2, `two 9P devices in ${argv.join(' ')}`);
  return out;
}

/** QEMU started paused under TCG with `extra` and the shares; `monitor` lines go to its monitor on stdin. Bounded to 30 s. */
function startPaused(bin, extra, shares, monitor = '') {
  const args = ['-S', '-machine', 'q35,accel=tcg', ...extra, '-nodefaults', '-display', 'none', '-serial', 'none', '-monitor', monitor ? 'stdio' : 'none', ...shares];
  // 7.2's assertion aborts: no core file.
  const r = spawnSync('sh', ['-c', 'ulimit -c 0; exec "$@"', 'sh', bin, ...args], { input: monitor, encoding: 'utf8', timeout: 30_000 });
  assert.equal(r.error, undefined, `${bin}: ${r.error?.message}`);
  return { status: r.status, signal: r.signal, stdout: r.stdout, stderr: r.stderr.trim() };
}

const withDevice = (shares, extra) => shares.map((a) => (a.startsWith('virtio-9p-pci,') ? `${a},${extra}` : a));

for (const { name, bin, skip } of QEMUS) {
  test(`${name}: confidential-guest-support gives the 9P devices iommu_platform=on by itself`, { skip, timeout: 120_000 }, () => {
    const dir = tmpDir('cocos-cgs-');
    try {
      const shares = sharesArgs(dir);

      // Without confidential-guest-support a device that keeps the legacy interface is accepted,
      // and has no iommu_platform: what follows is the confidential machine's doing.
      const plain = startPaused(bin, [], withDevice(shares, 'disable-legacy=off'), 'info qtree\nquit\n');
      assert.equal(plain.status, 0, plain.stderr);
      const qtree = plain.stdout.split('\n');
      const p9 = qtree.map((l, i) => (/dev: virtio-9p-device/.test(l) ? i : -1)).filter((i) => i >= 0);
      assert.equal(p9.length, 2, plain.stdout);
      for (const i of p9) {
        const props = qtree.slice(i + 1, i + 40).join('\n');
        assert.match(props, /iommu_platform = false/, `without confidential-guest-support:\n${props}`);
      }

      // With it, the same device is refused: QEMU turned iommu_platform on, which the legacy
      // interface (32 feature bits) cannot offer.
      const legacy = startPaused(bin, CGS, withDevice(shares, 'disable-legacy=off'));
      assert.notEqual(legacy.status, 0);
      assert.match(legacy.stderr, new RegExp(`-device virtio-9p-pci,[^:]*disable-legacy=off: ${REFUSED}`), legacy.stderr);

      // It is a default: a command line that says iommu_platform=off gets past the device check.
      const off = startPaused(bin, CGS, withDevice(shares, 'disable-legacy=off,iommu_platform=off'));
      assert.doesNotMatch(off.stderr, /VIRTIO_F_IOMMU_PLATFORM|virtio-9p-pci/, off.stderr);
      assert.match(off.stderr, LATER, off.stderr);

      // The manager's own devices (neither option) are accepted: QEMU's defaults, disable-legacy=on
      // and iommu_platform=on, fit together. The start then fails for the lack of KVM only.
      const ours = startPaused(bin, CGS, shares);
      assert.doesNotMatch(ours.stderr, /VIRTIO_F_IOMMU_PLATFORM|virtio-9p-pci/, ours.stderr);
      assert.match(ours.stderr, LATER, ours.stderr);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
}
