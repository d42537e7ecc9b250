// The per-VM QEMU argument vector built as the daemon builds it: its own configuration loader, a
// real VM directory with both 9P shares (and, for a plain OVMF boot, the VM's copy of the firmware
// variables), buildQemuArgs. Under TCG (no KVM here), with the test guest of `make guest`.
import { loadConfig } from '../dist/config/load.js';
import { buildQemuArgs } from '../dist/qemu/args.js';
import { validateCreateReq } from '../dist/request/create-request.js';
import { createVmDir, vmPaths } from '../dist/vm/vm-dir.js';
import { FACTS } from './fake-host.mjs';
import { GUEST_INITRD, GUEST_KERNEL } from './guest.mjs';

const WIRE_DEFAULTS = {
  agent_log_level: '', agent_cvm_server_ca_cert: Buffer.alloc(0), agent_cvm_client_key: Buffer.alloc(0), agent_cvm_client_cert: Buffer.alloc(0),
  agent_cvm_server_url: '', agent_cvm_ca_url: '', ttl: '', agent_certs_token: '', aws_access_key_id: '', aws_secret_access_key: '',
  aws_endpoint_url: '', aws_region: '', aa_kbs_params: '',
};

/**
 * The vector for configuration `env` and CreateVm request `request`, its VM directory made under
 * `stateDir` for VM `id`, on a host that supports what `host` says (fake-host.mjs FACTS; plain by
 * default). hostPort 0 (the default) lets QEMU's kernel pick the forwarded port.
 */
export async function vmVector(env, stateDir, request, { id = 'vm-under-test', hostPort = 0, host = FACTS.plain } = {}) {
  const config = loadConfig({
    MANAGER_QEMU_ENABLE_KVM: 'false',
    MANAGER_QEMU_MEMORY_SIZE: '512M',
    MANAGER_QEMU_DISK_IMG_KERNEL_FILE: GUEST_KERNEL,
    MANAGER_QEMU_DISK_IMG_ROOTFS_FILE: GUEST_INITRD,
    MANAGER_STATE_DIR: stateDir,
    ...env,
  }, host);
  const q = config.qemu;
  // As grpc-js hands it over: every field present, proto3's defaults where the caller sent none.
  const req = validateCreateReq({ ...WIRE_DEFAULTS, ...request });
  const paths = vmPaths(config.stateDir, id);
  await createVmDir(paths, id, req, !q.enableSevSnp && !q.enableTdx ? q.ovmfVars.file : undefined);
  return buildQemuArgs(q, {
    hostPort,
    ovmfVarsFile: paths.ovmfVars,
    aaKbsParams: req.aaKbsParams,
    shares: { certsDir: paths.certsDir, envDir: paths.envDir },
  });
}
