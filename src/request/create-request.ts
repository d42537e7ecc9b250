/**
 * Validation of CreateReq: pure, so every rule is tested with plain values.
 * Errors name the field and the rule, never the value (some fields are secrets).
 */
// The message as grpc-js hands it over (proto3 defaults filled in), generated from the proto:
// a type only, so the core stays free of gRPC.
import type { CreateReq__Output as CreateReq } from '../api/grpc/generated/manager/CreateReq.js';
import { DurationError, parseGoDuration } from '../util/duration.js';
import { RequestError } from './request-error.js';

export { RequestError } from './request-error.js';

/** A validated request: what a VM is made from. */
export interface VmRequest {
  agentLogLevel: string;
  serverUrl: string;
  caUrl: string;
  certsToken: string;
  aws: { accessKeyId: string; secretAccessKey: string; endpointUrl: string; region: string };
  clientCert: Uint8Array;
  clientKey: Uint8Array;
  serverCaCert: Uint8Array;
  /** Milliseconds; undefined: no TTL. */
  ttlMs: number | undefined;
  aaKbsParams: string;
}

export const MAX_PEM_BYTES = 64 * 1024;
export const MAX_TEXT_LENGTH = 8 * 1024;
export const MAX_KBS_PARAMS_LENGTH = 2048;

/** Fields written as `KEY=VALUE` lines of the guest's environment file. */
const ENV_FIELDS = [
  'agent_log_level',
  'agent_cvm_server_url',
  'agent_cvm_ca_url',
  'agent_certs_token',
  'aws_access_key_id',
  'aws_secret_access_key',
  'aws_endpoint_url',
  'aws_region',
] as const;

function checkEnvValue(field: string, value: string): void {
  if (value.length > MAX_TEXT_LENGTH) throw new RequestError(field, `longer than ${MAX_TEXT_LENGTH} characters`);
  // A line break would start a new KEY=VALUE line in the guest's environment file.
  if (/[\0\r\n]/.test(value)) throw new RequestError(field, 'must not contain NUL, CR or LF');
}

function checkKbsParams(value: string): void {
  if (value.length > MAX_KBS_PARAMS_LENGTH) {
    throw new RequestError('aa_kbs_params', `longer than ${MAX_KBS_PARAMS_LENGTH} characters`);
  }
  // It is appended to the kernel command line: a space would add kernel parameters (init=/bin/sh),
  // a quote would change how the kernel splits them.
  if (/[\s"'`\\\p{Cc}\u2028\u2029]/u.test(value)) {
    throw new RequestError('aa_kbs_params', 'must not contain whitespace, quotes, backslashes or control characters');
  }
}

export function parseTtl(ttl: string): number | undefined {
  if (ttl === '') return undefined;
  let ms: number;
  try {
    ms = parseGoDuration(ttl);
  } catch (err) {
    // The value itself is not echoed: it is caller-controlled text headed for logs.
    const why = err instanceof DurationError && err.message.includes('out of range') ? 'out of range' : 'not a Go duration';
    throw new RequestError('ttl', `${why}; expected a positive Go duration like 90s or 1h30m, or empty`);
  }
  if (!(ms >= 1)) throw new RequestError('ttl', 'must be positive (at least 1ms), or empty for no TTL');
  return ms;
}

export function validateCreateReq(req: CreateReq): VmRequest {
  for (const field of ENV_FIELDS) checkEnvValue(field, req[field]);
  checkKbsParams(req.aa_kbs_params);
  for (const field of ['agent_cvm_client_cert', 'agent_cvm_client_key', 'agent_cvm_server_ca_cert'] as const) {
    if (req[field].length > MAX_PEM_BYTES) throw new RequestError(field, `larger than ${MAX_PEM_BYTES} bytes`);
  }
  const ttlMs = parseTtl(req.ttl);
  return {
    agentLogLevel: req.agent_log_level,
    serverUrl: req.agent_cvm_server_url,
    caUrl: req.agent_cvm_ca_url,
    certsToken: req.agent_certs_token,
    aws: {
      accessKeyId: req.aws_access_key_id,
      secretAccessKey: req.aws_secret_access_key,
      endpointUrl: req.aws_endpoint_url,
      region: req.aws_region,
    },
    clientCert: req.agent_cvm_client_cert,
    clientKey: req.agent_cvm_client_key,
    serverCaCert: req.agent_cvm_server_ca_cert,
    ttlMs,
    aaKbsParams: req.aa_kbs_params,
  };
}
