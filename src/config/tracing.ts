/**
 * What the daemon traces, from COCOS_JAEGER_URL and COCOS_JAEGER_TRACE_RATIO (the Go manager's
 * settings) and the standard OTEL_* variables every OpenTelemetry SDK reads. Where both name the
 * same thing, OTEL_* wins: it is the more specific choice (the shipped environment file always
 * sets the COCOS_* pair). Pure; a value the SDK would silently replace by its default (its way
 * with a bad OTEL_* value) is a ConfigError here instead.
 */
import { invalidValue } from './setting.js';
import type { TracingConfig } from './types.js';

type Env = Readonly<Record<string, string | undefined>>;

const SAMPLERS: Record<string, { ratio?: number; parentBased: boolean }> = {
  always_on: { ratio: 1, parentBased: false },
  always_off: { ratio: 0, parentBased: false },
  traceidratio: { parentBased: false },
  parentbased_always_on: { ratio: 1, parentBased: true },
  parentbased_always_off: { ratio: 0, parentBased: true },
  parentbased_traceidratio: { parentBased: true },
};
const PROTOCOLS = ['http/protobuf', 'http/json'] as const;

/** The OpenTelemetry rule: an empty value is no value. */
function read(env: Env, name: string): string | undefined {
  const v = env[name]?.trim();
  return v === '' ? undefined : v;
}

function httpUrl(variable: string, value: string, example: string): URL {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw invalidValue(variable, value, `expected an absolute URL like ${example}`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw invalidValue(variable, value, `expected an http or https URL like ${example}`);
  return url;
}

/** `<base>/v1/traces`, as the SDKs make the traces URL of a base URL. */
function tracesUrlOf(base: string): string {
  return `${base.replace(/\/+$/, '')}/v1/traces`;
}

function endpoint(env: Env, cocosUrl: string): { url: string; urlFrom: string } {
  const traces = read(env, 'OTEL_EXPORTER_OTLP_TRACES_ENDPOINT');
  if (traces !== undefined) {
    httpUrl('OTEL_EXPORTER_OTLP_TRACES_ENDPOINT', traces, 'http://collector:4318/v1/traces');
    return { url: traces, urlFrom: 'OTEL_EXPORTER_OTLP_TRACES_ENDPOINT' };
  }
  const base = read(env, 'OTEL_EXPORTER_OTLP_ENDPOINT');
  if (base !== undefined) {
    httpUrl('OTEL_EXPORTER_OTLP_ENDPOINT', base, 'http://collector:4318');
    return { url: tracesUrlOf(base), urlFrom: 'OTEL_EXPORTER_OTLP_ENDPOINT' };
  }
  httpUrl('COCOS_JAEGER_URL', cocosUrl, 'http://localhost:4318');
  return { url: tracesUrlOf(cocosUrl), urlFrom: 'COCOS_JAEGER_URL' };
}

/** `from` says what chose it, as the variables read (for the log). */
function sampler(env: Env, cocosRatio: number): TracingConfig['sampler'] {
  const name = read(env, 'OTEL_TRACES_SAMPLER');
  if (name === undefined) return { ratio: cocosRatio, parentBased: true, from: `COCOS_JAEGER_TRACE_RATIO=${cocosRatio}` };
  const s = SAMPLERS[name];
  if (s === undefined) throw invalidValue('OTEL_TRACES_SAMPLER', name, `expected one of ${Object.keys(SAMPLERS).join(', ')}`);
  const from = `OTEL_TRACES_SAMPLER=${name}`;
  if (s.ratio !== undefined) return { ratio: s.ratio, parentBased: s.parentBased, from };
  // The standard's default for a ratio sampler without an argument is 1.
  const arg = read(env, 'OTEL_TRACES_SAMPLER_ARG');
  if (arg === undefined) return { ratio: 1, parentBased: s.parentBased, from };
  const ratio = Number(arg);
  if (!Number.isFinite(ratio) || ratio < 0 || ratio > 1) throw invalidValue('OTEL_TRACES_SAMPLER_ARG', arg, `expected a number in 0..1 (the ratio of ${from})`);
  return { ratio, parentBased: s.parentBased, from: `${from} OTEL_TRACES_SAMPLER_ARG=${arg}` };
}

/** The SDK drops the whole variable at the first bad entry; here that is an error instead. */
function checkResourceAttributes(env: Env): void {
  const raw = read(env, 'OTEL_RESOURCE_ATTRIBUTES');
  if (raw === undefined) return;
  for (const entry of raw.split(',').filter((e) => e.trim() !== '')) {
    const kv = entry.split('=');
    const [key = '', value = ''] = kv.map((x) => x.trim());
    let ok = kv.length === 2 && key !== '';
    try {
      ok &&= decodeURIComponent(key).length <= 255 && decodeURIComponent(value).length <= 255;
    } catch {
      ok = false;
    }
    if (!ok) throw invalidValue('OTEL_RESOURCE_ATTRIBUTES', raw, `expected key=value pairs separated by commas (',' and '=' inside a key or value percent-encoded, at most 255 characters each); bad entry ${JSON.stringify(entry)}`);
  }
}

function offSwitch(env: Env): string | undefined {
  const disabled = read(env, 'OTEL_SDK_DISABLED');
  if (disabled !== undefined && !/^(true|false)$/i.test(disabled)) throw invalidValue('OTEL_SDK_DISABLED', disabled, 'expected true or false');
  if (disabled?.toLowerCase() === 'true') return 'OTEL_SDK_DISABLED=true';
  const exporters = read(env, 'OTEL_TRACES_EXPORTER');
  if (exporters === undefined) return undefined;
  const names = exporters.split(',').map((e) => e.trim()).filter((e) => e !== '');
  const other = names.find((e) => e !== 'otlp' && e !== 'none');
  if (other !== undefined) throw invalidValue('OTEL_TRACES_EXPORTER', exporters, 'expected otlp or none (traces go out over OTLP only)');
  return names.includes('none') ? 'OTEL_TRACES_EXPORTER=none' : undefined;
}

function protocol(env: Env): TracingConfig['protocol'] {
  for (const variable of ['OTEL_EXPORTER_OTLP_TRACES_PROTOCOL', 'OTEL_EXPORTER_OTLP_PROTOCOL']) {
    const p = read(env, variable);
    if (p === undefined) continue;
    if (!(PROTOCOLS as readonly string[]).includes(p)) throw invalidValue(variable, p, `expected ${PROTOCOLS.join(' or ')} (OTLP over HTTP; grpc is not supported)`);
    return p as TracingConfig['protocol'];
  }
  return 'http/protobuf';
}

export function tracingSettings(env: Env, cocos: { url: string; ratio: number }): TracingConfig {
  // Every value is checked, also those that tracing turned off leaves unused.
  const where = endpoint(env, cocos.url);
  const s = sampler(env, cocos.ratio);
  const p = protocol(env);
  checkResourceAttributes(env);
  let off = offSwitch(env);
  // A sampler that can sample nothing: the SDK is not loaded. COCOS_JAEGER_TRACE_RATIO=0 is
  // that too (as in the Go manager, whose ratio sampler ignores the caller's flag).
  if (off === undefined && s.ratio === 0 && (!s.parentBased || s.from.startsWith('COCOS_'))) off = s.from;
  return { ...(off === undefined ? {} : { off }), ...where, protocol: p, sampler: s };
}
