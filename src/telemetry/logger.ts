/** pino JSON lines on stdout. Secrets never reach the logger; the redaction is a second line of defence. */
import { pino, type Logger } from 'pino';
import type { LogLevel } from '../config/types.js';

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
    // Synchronous: a line logged just before exit (or a crash) is never lost.
    pino.destination({ dest: 1, sync: true }),
  );
}
