/** Child spans around the steps of a call; a no-op when tracing is off. */
import { type Span, SpanStatusCode, trace } from '@opentelemetry/api';

export const tracer = trace.getTracer('cocos-manager');

export async function inSpan<T>(name: string, fn: (span: Span) => Promise<T>): Promise<T> {
  return tracer.startActiveSpan(name, async (span) => {
    try {
      return await fn(span);
    } catch (err) {
      span.setStatus({ code: SpanStatusCode.ERROR, message: (err as Error).message });
      throw err;
    } finally {
      span.end();
    }
  });
}
