/**
 * OpenTelemetry traces exported over OTLP/HTTP to COCOS_JAEGER_URL/v1/traces, sampled parent-based
 * at COCOS_JAEGER_TRACE_RATIO. Export runs in the background (batched): an unreachable collector
 * never slows an RPC, and is logged once until it answers again.
 */
import { context, diag, DiagLogLevel, propagation, trace } from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import { type ExportResult, ExportResultCode, W3CTraceContextPropagator } from '@opentelemetry/core';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { resourceFromAttributes } from '@opentelemetry/resources';
import {
  BasicTracerProvider,
  BatchSpanProcessor,
  ParentBasedSampler,
  type ReadableSpan,
  type SpanExporter,
  TraceIdRatioBasedSampler,
} from '@opentelemetry/sdk-trace-base';
import type { Logger } from 'pino';

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
      if (result.code !== ExportResultCode.SUCCESS && !this.failing) {
        this.failing = true;
        this.log.warn({ url: this.url, err: result.error?.message }, 'trace collector unreachable: spans are dropped until it answers');
      } else if (result.code === ExportResultCode.SUCCESS && this.failing) {
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

export function startTracing(opts: { url: string; ratio: number; instanceId: string; version: string; log: Logger }): Tracing {
  const url = `${opts.url.replace(/\/+$/, '')}/v1/traces`;
  // The SDK's own diagnostics would log every failed export: ours says it once.
  diag.setLogger({ error: () => undefined, warn: () => undefined, info: () => undefined, debug: () => undefined, verbose: () => undefined }, DiagLogLevel.NONE);
  const exporter = new LoggingExporter(new OTLPTraceExporter({ url, timeoutMillis: 5_000 }), opts.log, url);
  const provider = new BasicTracerProvider({
    resource: resourceFromAttributes({
      'service.name': 'manager',
      'service.instance.id': opts.instanceId,
      'service.version': opts.version,
    }),
    sampler: new ParentBasedSampler({ root: new TraceIdRatioBasedSampler(opts.ratio) }),
    spanProcessors: [new BatchSpanProcessor(exporter, { scheduledDelayMillis: 500, maxQueueSize: 2048 })],
  });
  const contextManager = new AsyncLocalStorageContextManager();
  contextManager.enable();
  context.setGlobalContextManager(contextManager);
  propagation.setGlobalPropagator(new W3CTraceContextPropagator());
  trace.setGlobalTracerProvider(provider);
  return { shutdown: () => provider.shutdown() };
}
