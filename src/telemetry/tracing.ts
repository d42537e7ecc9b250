/**
 * OpenTelemetry traces exported over OTLP/HTTP to COCOS_JAEGER_URL/v1/traces, sampled parent-based
 * at COCOS_JAEGER_TRACE_RATIO. Export runs in the background (batched): an unreachable collector
 * never slows an RPC, and is logged once until it answers again.
 */
import { context, diag, DiagLogLevel, propagation, trace } from '@opentelemetry/api';
import type { ExportResult } from '@opentelemetry/core';
import type { ReadableSpan, SpanExporter } from '@opentelemetry/sdk-trace-base';
import type { Logger } from 'pino';

const SUCCESS = 0; // ExportResultCode.SUCCESS

/** Passes spans on; reports the first failure of a run of failures, and the recovery. */
class LoggingExporter implements SpanExporter {
  private failing = false;

  constructor(
    private readonly inner: SpanExporter,
    private readonly log: Logger,
    private readonly url: string,
  ) {}

  export(spans: ReadableSpan[], done: (r: ExportResult) => void): void {
    this.inner.export(spans, (result) => {
      if (result.code !== SUCCESS && !this.failing) {
        this.failing = true;
        this.log.warn({ url: this.url, err: result.error?.message }, 'trace collector unreachable: spans are dropped until it answers');
      } else if (result.code === SUCCESS && this.failing) {
        this.failing = false;
        this.log.info({ url: this.url }, 'trace collector reachable again');
      }
      done(result);
    });
  }

  shutdown(): Promise<void> {
    return this.inner.shutdown();
  }

  forceFlush(): Promise<void> {
    return this.inner.forceFlush?.() ?? Promise.resolve();
  }
}

export interface Tracing {
  shutdown(): Promise<void>;
}

const OFF: Tracing = { shutdown: () => Promise.resolve() };

/**
 * Ratio 0 turns tracing off entirely: the SDK (~100 ms of start-up, ~7 MiB) is not even loaded,
 * and spans stay no-ops, also for callers that send a sampled traceparent.
 */
export async function startTracing(opts: { url: string; ratio: number; instanceId: string; version: string; log: Logger }): Promise<Tracing> {
  if (opts.ratio <= 0) return OFF;
  const [{ AsyncLocalStorageContextManager }, { W3CTraceContextPropagator }, { OTLPTraceExporter }, { resourceFromAttributes }, sdk] = await Promise.all([
    import('@opentelemetry/context-async-hooks'),
    import('@opentelemetry/core'),
    import('@opentelemetry/exporter-trace-otlp-http'),
    import('@opentelemetry/resources'),
    import('@opentelemetry/sdk-trace-base'),
  ]);
  const url = `${opts.url.replace(/\/+$/, '')}/v1/traces`;
  // The SDK's own diagnostics would log every failed export: ours says it once.
  diag.setLogger({ error: () => undefined, warn: () => undefined, info: () => undefined, debug: () => undefined, verbose: () => undefined }, DiagLogLevel.NONE);
  const exporter = new LoggingExporter(new OTLPTraceExporter({ url, timeoutMillis: 5_000 }), opts.log, url);
  const provider = new sdk.BasicTracerProvider({
    resource: resourceFromAttributes({
      'service.name': 'manager',
      'service.instance.id': opts.instanceId,
      'service.version': opts.version,
    }),
    sampler: new sdk.ParentBasedSampler({ root: new sdk.TraceIdRatioBasedSampler(opts.ratio) }),
    spanProcessors: [new sdk.BatchSpanProcessor(exporter, { scheduledDelayMillis: 500, maxQueueSize: 2048 })],
  });
  const contextManager = new AsyncLocalStorageContextManager();
  contextManager.enable();
  context.setGlobalContextManager(contextManager);
  propagation.setGlobalPropagator(new W3CTraceContextPropagator());
  trace.setGlobalTracerProvider(provider);
  return { shutdown: () => provider.shutdown() };
}
