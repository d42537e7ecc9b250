// An OTLP/HTTP trace receiver for the tests: a plain HTTP server on loopback that takes
// POST /v1/traces (or any path given) in both encodings an OTLP/HTTP exporter may send, binary
// protobuf (application/x-protobuf, the standard's default) and JSON (application/json), and
// keeps what came in one shape: the resources' attributes and the spans, ids in hex.
import http from 'node:http';
import path from 'node:path';
import * as protoLoader from '@grpc/proto-loader';
import { FIXTURES } from './helpers.mjs';
import { listenOnFreePort } from './daemon.mjs';

const pkg = protoLoader.loadSync(path.join(FIXTURES, 'otlp-trace-subset.proto'), { keepCase: true, longs: String, enums: Number, defaults: true, oneofs: true });
const decodeRequest = pkg['opentelemetry.proto.collector.trace.v1.TraceService'].Export.requestDeserialize;

const hex = (b) => (typeof b === 'string' ? b : Buffer.from(b ?? []).toString('hex'));
const attributes = (list) => Object.fromEntries((list ?? []).map((a) => [a.key, a.value?.stringValue ?? a.value?.string_value ?? a.value?.intValue ?? a.value?.int_value ?? a.value?.boolValue ?? a.value?.bool_value]));

/** The request's resource spans, whichever encoding, with camelCase keys as OTLP's JSON has them. */
function resourceSpans(contentType, body) {
  if (/json/.test(contentType)) return JSON.parse(body.toString('utf8')).resourceSpans ?? [];
  return decodeRequest(body).resource_spans.map((rs) => ({
    resource: rs.resource,
    scopeSpans: rs.scope_spans.map((ss) => ({ spans: ss.spans.map((s) => ({ ...s, traceId: s.trace_id, spanId: s.span_id, parentSpanId: s.parent_span_id })) })),
  }));
}

/**
 * Starts listening; `spans` (name, traceId, spanId, parentSpanId, kind, attributes), `resources`
 * (attribute maps), `requests` (method, path and content type of each request). close() when
 * done, also on failure: a receiver left listening keeps the test's process alive.
 */
export async function otlpReceiver({ tracesPath = '/v1/traces' } = {}) {
  const spans = [];
  const resources = [];
  const requests = [];
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (d) => chunks.push(d));
    req.on('end', () => {
      const type = req.headers['content-type'] ?? '';
      requests.push({ method: req.method, path: req.url, type });
      if (req.method === 'POST' && req.url === tracesPath) {
        for (const rs of resourceSpans(type, Buffer.concat(chunks))) {
          resources.push(attributes(rs.resource?.attributes));
          for (const ss of rs.scopeSpans ?? []) {
            for (const s of ss.spans ?? []) {
              spans.push({ name: s.name, traceId: hex(s.traceId), spanId: hex(s.spanId), parentSpanId: hex(s.parentSpanId), kind: s.kind, attributes: attributes(s.attributes) });
            }
          }
        }
      }
      // An empty ExportTraceServiceResponse in the request's encoding.
      res.writeHead(200, { 'content-type': /json/.test(type) ? 'application/json' : 'application/x-protobuf' });
      res.end(/json/.test(type) ? '{}' : '');
    });
  });
  const port = await listenOnFreePort(server);
  return { port, url: `http://127.0.0.1:${port}`, spans, resources, requests, close: () => new Promise((r) => {
    server.close(r);
    server.closeAllConnections();
  }) };
}
