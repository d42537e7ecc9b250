/**
 * OpenTelemetry traces through the Node SDK (@opentelemetry/sdk-node), exported over OTLP/HTTP
 * as config.tracing says (src/config/tracing.ts). The SDK does what every OpenTelemetry SDK does
 * from the environment: the context, the propagators (OTEL_PROPAGATORS: W3C trace context and
 * baggage), the resource (OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES over the daemon's own
 * service.name=manager, service.instance.id and service.version). Traces only: metrics are
 * Prometheus's (/metrics), logs are stdout's. Export runs in the background (batched): an
 * unreachable collector never slows an RPC, and is logged once until it answers again.
 */
import { diag, DiagLogLevel } from '@opentelemetry/api';
import type { ExportResult } from '@opentelemetry/core';
import type { ReadableSpan, SpanExporter } from '@opentelemetry/sdk-trace';
import type { Logger } from 'pino';
import type { TracingConfig } from '../config/types.js';

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
 * Tracing off (config.tracing.off) does not even load the SDK (~100 ms of start-up, several
 * MiB), and spans stay no-ops, also for callers that send a sampled traceparent.
 */
export async function startTracing(opts: { config: TracingConfig; instanceId: string; version: string; log: Logger }): Promise<Tracing> {
  const t = opts.config;
  if (t.off !== undefined) return OFF;
  const [{ NodeSDK }, { BatchSpanProcessor, ParentBasedSampler, TraceIdRatioBasedSampler }, { resourceFromAttributes }, { OTLPTraceExporter }] = await Promise.all([
    import('@opentelemetry/sdk-node'),
    import('@opentelemetry/sdk-trace'),
    import('@opentelemetry/resources'),
    t.protocol === 'http/json' ? import('@opentelemetry/exporter-trace-otlp-http') : import('@opentelemetry/exporter-trace-otlp-proto'),
  ]);
  // The SDK's own diagnostics would log every failed export: ours says it once. (OTEL_LOG_LEVEL,
  // read by NodeSDK below, still turns them on, on the console.)
  diag.setLogger({ error: () => undefined, warn: () => undefined, info: () => undefined, debug: () => undefined, verbose: () => undefined }, DiagLogLevel.NONE);
  const root = new TraceIdRatioBasedSampler(t.sampler.ratio);
  const sdk = new NodeSDK({
    resource: resourceFromAttributes({
      'service.name': 'manager',
      'service.instance.id': opts.instanceId,
      'service.version': opts.version,
    }),
    sampler: t.sampler.parentBased ? new ParentBasedSampler({ root }) : root,
    spanProcessors: [
      new BatchSpanProcessor({ exporter: new LoggingExporter(new OTLPTraceExporter({ url: t.url }), opts.log, t.url), scheduledDelayMillis: 500, maxQueueSize: 2048 }),
    ],
    // Empty, not absent: absent, NodeSDK would set up OTLP metric and log exporters from the environment.
    metricReaders: [],
    logRecordProcessors: [],
    instrumentations: [],
  });
  sdk.start();
  return { shutdown: () => sdk.shutdown() };
}
