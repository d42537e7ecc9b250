/**
 * Reads the configuration from an environment object. Pure: no process.env, no files.
 * A bad value becomes a ConfigError naming the variable, the value given and what is expected:
 * first each setting by its declaration (settings.ts), then the rules that involve two.
 */
import { sizeInBytes } from '../util/size.js';
import { type CvmHostFacts, type DeclaredCvm, resolveCvm } from './cvm.js';
import { type ConfigError, type Given, type Setting, invalidValue, readSettings } from './setting.js';
import { SETTINGS } from './settings.js';
import { tracingSettings } from './tracing.js';
import type { Config } from './types.js';

export { ConfigError } from './setting.js';
export { MAX_START_TIMEOUT_MS } from './settings.js';

/**
 * The configuration `env` gives on a host whose SEV-SNP and TDX support is `host` (read by
 * src/host/cvm-host.ts): MANAGER_QEMU_ENABLE_SEV_SNP and _ENABLE_TDX decided (cvm.ts), so
 * everything downstream reads the decision; and the tracing derived from the COCOS_JAEGER_*
 * settings and the OTEL_* variables (tracing.ts).
 */
export function loadConfig(env: Readonly<Record<string, string | undefined>>, host: CvmHostFacts): Config {
  const { config: declared, given } = readSettings(SETTINGS, env);
  const q = declared.qemu;
  const as = (value: boolean | 'auto', g: Given): DeclaredCvm => ({ value, variable: g.name, text: g.text });
  const cvm = resolveCvm(
    { sevSnp: as(q.enableSevSnp, given(SETTINGS.qemu.enableSevSnp)), tdx: as(q.enableTdx, given(SETTINGS.qemu.enableTdx)), allowNonConfidential: q.allowNonConfidentialVms },
    host,
  );
  const config: Config = {
    ...declared,
    qemu: { ...q, enableSevSnp: cvm.sevSnp.on, enableTdx: cvm.tdx.on },
    cvm,
    tracing: tracingSettings(env, { url: declared.jaegerUrl, ratio: declared.jaegerTraceRatio }),
  };
  checkCombinations(config, (s, expected, value = given(s).text) => invalidValue(given(s).name, value, expected));
  return config;
}

/** The error of a setting that breaks a rule; `value` defaults to the text the environment gave it. */
type Invalid = (s: Setting<unknown>, expected: string, value?: string) => ConfigError;

/** Strict base64 of exactly 32 bytes (43 characters and one '='). */
function isBase64Of32Bytes(s: string): boolean {
  return /^[A-Za-z0-9+/]{43}=$/.test(s) && Buffer.from(s, 'base64').length === 32;
}

/** Rules that involve more than one setting. */
function checkCombinations(c: Config, invalid: Invalid): void {
  const q = c.qemu;
  const S = SETTINGS.qemu;
  if (q.enableHostData && !isBase64Of32Bytes(q.hostData)) {
    throw invalid(S.hostData, `expected base64 of exactly 32 bytes (44 characters) since ${S.enableHostData.env} is true`, q.hostData);
  }
  if (q.smpMaxCpus < q.smpCount) {
    throw invalid(S.smpMaxCpus, `expected at least ${S.smpCount.env} (${q.smpCount})`);
  }
  // QEMU reads a bare -m size as MiB but a bare maxmem= as bytes; compare what QEMU will compare.
  if (sizeInBytes(q.maxMemory, 'B')! < sizeInBytes(q.memorySize, 'M')!) {
    const hint = /\d$/.test(q.maxMemory) ? ' (QEMU reads a bare maxmem number as bytes: add a suffix such as G)' : '';
    throw invalid(S.maxMemory, `expected at least ${S.memorySize.env} (${q.memorySize})${hint}`, q.maxMemory);
  }
  for (const [s, d] of [[c.grpc, SETTINGS.grpc], [c.http, SETTINGS.http]] as const) {
    if ((s.serverCert === '') !== (s.serverKey === '')) {
      const missing = s.serverCert === '' ? d.serverCert : d.serverKey;
      throw invalid(missing, `expected a path or the PEM text: ${d.serverCert.env} and ${d.serverKey.env} turn TLS on together`, '');
    }
    if (s.clientCaCerts !== '' && s.serverCert === '') {
      throw invalid(d.clientCaCerts, `mutual TLS needs ${d.serverCert.env} and ${d.serverKey.env}`, s.clientCaCerts);
    }
  }
  checkGuestFacingSettings(c, invalid);
}

function checkGuestFacingSettings(c: Config, invalid: Invalid): void {
  const S = SETTINGS;
  if (c.admin.onGrpcPort && c.grpc.clientCaCerts === '') {
    throw invalid(
      S.admin.onGrpcPort,
      `ManagerAdmin on the TCP port needs mutual TLS: set ${S.grpc.clientCaCerts.env} (with ${S.grpc.serverCert.env} and _KEY), or use ${S.admin.socket.env}`,
    );
  }
  const uids = c.isolation.uidRange;
  const size = uids.last - uids.first + 1;
  if (c.isolation.enabled && c.maxVms > 0 && size < c.maxVms) {
    throw invalid(S.isolation.uidRange, `expected at least ${S.maxVms.env} (${c.maxVms}) ids: each VM's QEMU runs as a uid of its own`);
  }
  if (c.connections.maxPerPeer > c.connections.maxTotal) {
    throw invalid(S.connections.maxPerPeer, `expected at most ${S.connections.maxTotal.env} (${c.connections.maxTotal})`);
  }
}
