/**
 * The manager in-process, with the fake driver (test/fake-driver.mjs): the launcher, the
 * registry, SupervisedVm and recovery run for real on a temporary state directory; only QEMU
 * and /proc are stand-ins. Ports and uids are plain numbers here (nothing binds them).
 */
import fs from 'node:fs';
import path from 'node:path';
import { Writable } from 'node:stream';
import pino from 'pino';
import { loadConfig } from '../dist/config/load.js';
import { GpuPool } from '../dist/manager/gpu-pool.js';
import { PortPool } from '../dist/manager/port-pool.js';
import { UidPool } from '../dist/manager/uid-pool.js';
import { diskFiles } from '../dist/manager/vm-files.js';
import { DiskSource } from '../dist/manager/disk-source.js';
import { VmDisks } from '../dist/manager/vm-disks.js';
import { QemuImg } from '../dist/vm/qemu-img.js';
import { execFileSync } from 'node:child_process';
import { VmManager } from '../dist/manager/vm-manager.js';
import { validateCreateReq } from '../dist/request/create-request.js';
import { tmpDir } from './daemon.mjs';
import { FakeDriver } from './fake-driver.mjs';
import { FACTS } from './fake-host.mjs';

/** A CreateReq as the API hands it to the manager (parsed at the edge), with a TTL if given. */
export function createReq(ttl = '') {
  return validateCreateReq({
    agent_log_level: 'info', agent_cvm_server_ca_cert: Buffer.alloc(0), agent_cvm_client_key: Buffer.alloc(0),
    agent_cvm_client_cert: Buffer.alloc(0), agent_cvm_server_url: 'cvms.example:7001', agent_cvm_ca_url: '', ttl,
    agent_certs_token: '', aws_access_key_id: '', aws_secret_access_key: '', aws_endpoint_url: '', aws_region: '', aa_kbs_params: '',
  });
}

/** Two GPUs of a host, in separate IOMMU groups. */
export const GPUS = [{ bdf: '0000:01:00.0', iommuGroup: '10' }, { bdf: '0000:02:00.0', iommuGroup: '11' }];

/**
 * A manager on `stateDir` (a new one by default). One port (46001), one uid with `isolation`, so
 * a later CreateVm that succeeds proves the failed one gave everything back. `gpus`: the host's
 * GPUs (none by default); their /dev/vfio nodes are given and taken back in `driver.calls`
 * (`vfio` makes that fail). `lockedMemory`: the daemon's RLIMIT_MEMLOCK (unlimited by default).
 */
export function startManager({ driver = new FakeDriver(), stateDir = tmpDir('cocos-inproc-'), env = {}, isolation = false, files = diskFiles, firewall, gpus = [], vfio, lockedMemory, disk } = {}) {
  const vars = path.join(stateDir, 'OVMF_VARS.fd');
  if (!fs.existsSync(vars)) fs.writeFileSync(vars, 'firmware variables');
  const diskEnv = disk ? { MANAGER_QEMU_ENABLE_DISK: 'true', MANAGER_QEMU_SRC_DISK_FILE: disk.source ?? makeDiskSource(stateDir) } : {};
  const config = loadConfig({
    ...diskEnv,
    MANAGER_STATE_DIR: path.join(stateDir, 'state'),
    MANAGER_QEMU_ENABLE_KVM: 'false',
    MANAGER_QEMU_ENABLE_SEV_SNP: 'false',
    MANAGER_QEMU_OVMF_VARS_FILE: vars,
    MANAGER_QEMU_HOST_FWD_RANGE: '46001-46001',
    MANAGER_MAX_VMS: '1',
    MANAGER_QEMU_POWERDOWN_TIMEOUT: '0',
    MANAGER_VM_UID_RANGE: '1900990001-1900990001',
    ...env,
  }, FACTS.plain);
  const lines = [];
  const log = pino({ level: 'debug' }, new Writable({ write(chunk, _e, cb) { lines.push(JSON.parse(chunk)); cb(); } }));
  const ports = new PortPool(config.qemu.hostFwdRange, async () => true);
  const uidLog = [];
  const uids = isolation
    ? new UidPool(config.isolation.uidRange, {
      inUse: () => new Set(),
      killAll: (released) => {
        for (const uid of released) driver.calls.push(['retire-uid', uid]);
        return new Map();
      },
    })
    : undefined;
  const observed = [];
  const observer = { vmStarted: () => observed.push('started'), qemuExited: (cause) => observed.push(cause) };
  const fw = firewall ?? { table: 'cocos_manager_test', ensure: async () => {}, removeIf: async () => false };
  let disks;
  if (disk) {
    const images = disk.images ?? new QemuImg();
    const source = new DiskSource(config.qemu.disk.srcFile, images, log, disk.pollMs);
    disks = new VmDisks(config, source, images, disk.free, log);
    source.start();
  }
  const access = vfio ?? {
    give: (group, owner) => driver.calls.push(['give-vfio', group, owner.uid]),
    takeBack: (group) => driver.calls.push(['take-back-vfio', group]),
  };
  const gpuPool = new GpuPool(gpus, uids ? access : undefined);
  const manager = new VmManager(config, log, ports, driver, {
    observer,
    files,
    isolation: uids ? { uids, groups: [], firewall: fw } : undefined,
    gpus: gpuPool,
    lockedMemory,
    disks,
  });
  const events = [];
  manager.watch((e) => events.push(e));
  return { manager, driver, config, ports, uids, gpus: gpuPool, uidLog, lines, events, observed, disks, stateDir: config.stateDir };
}

/**
 * A qcow2 disk source in `dir` (made once per directory): `sizeMiB` virtual, its first MiB
 * written with `pattern` so its content is not all zeros. Root-owned and 0644, as a host keeps it.
 */
export function makeDiskSource(dir, { name = 'source.qcow2', sizeMiB = 64, pattern = 0x5a } = {}) {
  const file = path.join(dir, name);
  if (fs.existsSync(file)) return file;
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', file, `${sizeMiB}M`], { timeout: 20_000 });
  execFileSync('qemu-io', ['-f', 'qcow2', '-c', `write -q -P ${pattern} 0 1M`, file], { timeout: 20_000 });
  fs.chmodSync(file, 0o644);
  return file;
}

/** The VM directories under the state directory. */
export function vmDirs(stateDir) {
  try {
    return fs.readdirSync(path.join(stateDir, 'vms'));
  } catch {
    return [];
  }
}
