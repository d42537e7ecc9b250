/**
 * One span, one metric sample and one `rpc` log line per call, for every method of every
 * service a server has (ManagerService, ManagerAdmin with its WatchVms stream, health,
 * reflection): a grpc-js server interceptor, so the handlers only answer.
 */
import * as grpc from '@grpc/grpc-js';
import { type Context, context, propagation, type Span, SpanKind, SpanStatusCode, type TextMapGetter, trace } from '@opentelemetry/api';
import type { Logger } from 'pino';
import { observeGoApiCall } from '../../telemetry/metrics.js';
import { tracer } from '../../telemetry/spans.js';

export interface CallRecorder {
  rpc(method: string, code: string, seconds: number): void;
}

const metadataGetter: TextMapGetter<grpc.Metadata> = {
  keys: (m) => Object.keys(m.getMap()),
  get: (m, key) => {
    const v = m.get(key);
    return v.length === 0 ? undefined : v.map(String);
  },
};

/** `/manager.ManagerAdmin/WatchVms` → the service and the plain method name (the metric's label). */
function methodOfPath(path: string): { service: string; method: string } {
  const slash = path.lastIndexOf('/');
  return { service: path.slice(1, slash), method: path.slice(slash + 1) };
}

/**
 * What is recorded is the handler's answer: a unary call's message (OK) or error status, a
 * stream's final status, or CANCELLED when a stream's caller leaves (how a watch normally ends).
 * A unary call whose caller leaves while its handler runs is recorded when the handler answers.
 * A call that never reaches its handler (grpc-js refused it: too large, undecodable, its
 * caller gone first) is not recorded: grpc-js does not tell interceptors the status it sent.
 */
export function callTelemetry(log: Logger, recorder: CallRecorder): grpc.ServerInterceptor {
  return (descriptor, call) => {
    const started = performance.now();
    const { service, method } = methodOfPath(descriptor.path);
    const streams = descriptor.responseStream;
    let metadata: grpc.Metadata | undefined;
    let span: Span | undefined;
    let active: Context | undefined;
    let done = false;
    let sent = 0;

    // The handler is about to run: its span continues the caller's traceparent and is active
    // while it runs, so the spans of its steps are its children.
    const enter = () => {
      const parent = propagation.extract(context.active(), metadata ?? new grpc.Metadata(), metadataGetter);
      span = tracer.startSpan(
        `${service}/${method}`,
        { kind: SpanKind.SERVER, attributes: { 'rpc.system': 'grpc', 'rpc.service': service, 'rpc.method': method }, startTime: started },
        parent,
      );
      active = trace.setSpan(parent, span);
    };
    const within = (fn: () => void) => (active ? context.with(active, fn) : fn());

    const finish = (code: grpc.status, details?: string) => {
      if (done || !span) return;
      done = true;
      const ended = performance.now();
      const seconds = (ended - started) / 1000;
      const name = grpc.status[code] ?? String(code);
      // A stream ends when its caller leaves: that is no failure.
      const normal = code === grpc.status.OK || (streams && code === grpc.status.CANCELLED);
      span.setAttribute('rpc.grpc.status_code', code);
      if (streams) span.setAttribute('cocos.events_sent', sent);
      if (!normal) span.setStatus({ code: SpanStatusCode.ERROR, message: details || name });
      span.end(ended);
      recorder.rpc(method, name, seconds);
      observeGoApiCall(descriptor.path, seconds);
      // Successful calls at debug (CreateVm and RemoveVm log their own lines); failures at info.
      const line = { method, code: name, ms: seconds * 1000, ...(streams ? { events: sent } : {}), ...(!normal && details ? { details } : {}) };
      if (normal) log.debug(line, 'rpc');
      else if (code === grpc.status.INTERNAL) log.warn(line, 'rpc');
      else log.info(line, 'rpc');
    };

    const listener = new grpc.ServerListenerBuilder()
      .withOnReceiveMetadata((md, next) => {
        metadata = md;
        // A handler of a client stream runs at once; the others once the request is read.
        if (descriptor.requestStream) enter();
        within(() => next(md));
      })
      .withOnReceiveMessage((message, next) => within(() => next(message)))
      .withOnReceiveHalfClose((next) => {
        if (!descriptor.requestStream) enter();
        within(next);
      })
      .withOnCancel(() => {
        if (!span) done = true; // never reached its handler
        else if (streams) finish(grpc.status.CANCELLED);
        // else: a unary handler still runs; its answer is recorded
      })
      .build();
    const responder = new grpc.ResponderBuilder()
      .withStart((next) => next(listener))
      .withSendMessage((message, next) => {
        sent++;
        if (!streams) finish(grpc.status.OK);
        next(message);
      })
      .withSendStatus((status, next) => {
        finish(status.code, status.details);
        next(status);
      })
      .build();
    return new grpc.ServerInterceptingCall(call, responder);
  };
}
