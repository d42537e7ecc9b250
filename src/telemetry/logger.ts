/** pino JSON lines on stdout. Secrets never reach the logger; the redaction is a second line of defence. */
import { pino, type Logger } from 'pino';
import type { LogLevel } from '../config/types.js';

/** At most this much log waits for stdout. */
export const LOG_BUFFER_BYTES = 8 * 1024 * 1024;

export const SECRET_FIELDS = ['agent_cvm_client_key', 'aws_secret_access_key', 'agent_certs_token'];

export function createLogger(level: LogLevel, instanceId: string): Logger {
  return pino(
    {
      level,
      base: { service: 'cocos-manager', instance_id: instanceId },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
      redact: { paths: [...SECRET_FIELDS, ...SECRET_FIELDS.map((f) => `*.${f}`)], censor: '[redacted]' },
    },
    // Asynchronous, with a bounded buffer: a slow reader of stdout (a stalled journald, a full
    // pipe) must not stall the event loop and every VM's calls with it; past the bound, lines
    // are dropped. pino flushes the buffer synchronously on process exit.
    pino.destination({ dest: 1, sync: false, minLength: 0, maxLength: LOG_BUFFER_BYTES }),
  );
}
