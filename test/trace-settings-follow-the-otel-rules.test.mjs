// What turns tracing on and where spans go, from COCOS_JAEGER_* and OTEL_* (the pure part of the
// configuration, src/config/tracing.ts): the rules of docs/configuration.md, "Tracing".
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { ROOT } from './helpers.mjs';
import { FACTS } from './fake-host.mjs';

const { loadConfig } = await import(path.join(ROOT, 'dist/config/load.js'));
const tracing = (env) => loadConfig(env, FACTS.plain).tracing;

test('defaults: on, OTLP/protobuf to http://localhost:4318/v1/traces, every trace sampled, callers followed', () => {
  assert.deepEqual(tracing({}), {
    url: 'http://localhost:4318/v1/traces',
    urlFrom: 'COCOS_JAEGER_URL',
    protocol: 'http/protobuf',
    sampler: { ratio: 1, parentBased: true, from: 'COCOS_JAEGER_TRACE_RATIO=1' },
  });
});

test('endpoints: a signal endpoint as given, a base endpoint or COCOS_JAEGER_URL with /v1/traces, OTEL_* first', () => {
  assert.equal(tracing({ COCOS_JAEGER_URL: 'http://jaeger:4318/' }).url, 'http://jaeger:4318/v1/traces');
  assert.equal(tracing({ COCOS_JAEGER_URL: 'http://jaeger:4318', OTEL_EXPORTER_OTLP_ENDPOINT: 'https://otel:4318/base' }).url, 'https://otel:4318/base/v1/traces');
  const both = tracing({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://otel:4318', OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'http://otel:4318/x' });
  assert.deepEqual([both.url, both.urlFrom], ['http://otel:4318/x', 'OTEL_EXPORTER_OTLP_TRACES_ENDPOINT']);
  // The OpenTelemetry rule: empty is unset.
  assert.equal(tracing({ COCOS_JAEGER_URL: 'http://jaeger:4318', OTEL_EXPORTER_OTLP_ENDPOINT: '' }).urlFrom, 'COCOS_JAEGER_URL');
  assert.equal(tracing({ OTEL_EXPORTER_OTLP_PROTOCOL: 'http/protobuf', OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: 'http/json' }).protocol, 'http/json');
});

test('samplers: OTEL_TRACES_SAMPLER over COCOS_JAEGER_TRACE_RATIO; its argument only for the ratio samplers', () => {
  const s = (env) => tracing(env).sampler;
  assert.deepEqual(s({ COCOS_JAEGER_TRACE_RATIO: '0.25' }), { ratio: 0.25, parentBased: true, from: 'COCOS_JAEGER_TRACE_RATIO=0.25' });
  assert.deepEqual(s({ COCOS_JAEGER_TRACE_RATIO: '0.25', OTEL_TRACES_SAMPLER: 'traceidratio', OTEL_TRACES_SAMPLER_ARG: '0.5' }), { ratio: 0.5, parentBased: false, from: 'OTEL_TRACES_SAMPLER=traceidratio OTEL_TRACES_SAMPLER_ARG=0.5' });
  assert.equal(s({ OTEL_TRACES_SAMPLER: 'parentbased_traceidratio' }).ratio, 1, 'no argument: 1');
  assert.deepEqual(s({ OTEL_TRACES_SAMPLER: 'always_on', OTEL_TRACES_SAMPLER_ARG: '0' }), { ratio: 1, parentBased: false, from: 'OTEL_TRACES_SAMPLER=always_on' });
  // Without a sampler named, its argument is not read (the standard's rule).
  assert.equal(s({ OTEL_TRACES_SAMPLER_ARG: '0' }).ratio, 1);
});

test('off: by the OTEL switches or a sampler that can sample nothing; a parent-based one at 0 still follows callers', () => {
  assert.equal(tracing({ OTEL_SDK_DISABLED: 'TRUE' }).off, 'OTEL_SDK_DISABLED=true');
  assert.equal(tracing({ OTEL_SDK_DISABLED: 'false' }).off, undefined);
  assert.equal(tracing({ OTEL_TRACES_EXPORTER: 'none' }).off, 'OTEL_TRACES_EXPORTER=none');
  assert.equal(tracing({ OTEL_TRACES_EXPORTER: 'otlp' }).off, undefined);
  assert.equal(tracing({ OTEL_TRACES_SAMPLER: 'always_off' }).off, 'OTEL_TRACES_SAMPLER=always_off');
  assert.equal(tracing({ COCOS_JAEGER_TRACE_RATIO: '0' }).off, 'COCOS_JAEGER_TRACE_RATIO=0');
  assert.equal(tracing({ COCOS_JAEGER_TRACE_RATIO: '0', OTEL_TRACES_SAMPLER: 'parentbased_always_on' }).off, undefined, 'OTEL_* wins');
  assert.equal(tracing({ OTEL_TRACES_SAMPLER: 'parentbased_always_off' }).off, undefined);
  assert.equal(tracing({ OTEL_TRACES_SAMPLER: 'parentbased_traceidratio', OTEL_TRACES_SAMPLER_ARG: '0' }).off, undefined);
});
