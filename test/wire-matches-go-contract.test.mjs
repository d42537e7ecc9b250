// Wire compatibility with the Go manager's clients, checked without our own .proto: requests are
// hand-encoded protobuf bytes using the field numbers and types of the Go manager's contract, sent
// to the method paths a Go stub calls, and the answers are decoded by hand the same way.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as grpc from '@grpc/grpc-js';
import { Daemon, fakeQemuEnv, readAgent, tmpDir } from './daemon.mjs';

// Minimal protobuf wire encoding: varints, and length-delimited fields (wire type 2).
function varint(n) {
  const out = [];
  let v = BigInt(n);
  do {
    let b = Number(v & 0x7fn);
    v >>= 7n;
    if (v) b |= 0x80;
    out.push(b);
  } while (v);
  return Buffer.from(out);
}
const lenField = (num, bytes) => Buffer.concat([varint((num << 3) | 2), varint(bytes.length), Buffer.from(bytes)]);
const encode = (fields) => Buffer.concat(Object.entries(fields).map(([n, v]) => lenField(Number(n), typeof v === 'string' ? Buffer.from(v) : v)));

function decode(buf) {
  const out = {};
  let i = 0;
  const readVarint = () => {
    let r = 0n;
    let s = 0n;
    for (;;) {
      const b = buf[i++];
      r |= BigInt(b & 0x7f) << s;
      if (!(b & 0x80)) return r;
      s += 7n;
    }
  };
  while (i < buf.length) {
    const key = Number(readVarint());
    const num = key >> 3;
    const type = key & 7;
    if (type === 0) out[num] = Number(readVarint());
    else if (type === 2) {
      const len = Number(readVarint());
      out[num] = buf.subarray(i, i + len);
      i += len;
    } else throw new Error(`unexpected wire type ${type}`);
  }
  return out;
}

let daemon;
let raw;
before(async () => {
  daemon = await Daemon.start(fakeQemuEnv(tmpDir(), { MANAGER_EOS_VERSION: 'v0.8.0' }));
  raw = new grpc.Client(`127.0.0.1:${daemon.port}`, grpc.credentials.createInsecure());
});
after(async () => {
  raw?.close();
  await daemon?.stop();
});

function rawCall(method, body) {
  return new Promise((resolve, reject) => {
    raw.makeUnaryRequest(`/manager.ManagerService/${method}`, (b) => b, (b) => b, body, { deadline: Date.now() + 10_000 }, (err, res) => (err ? reject(err) : resolve(res)));
  });
}

test('CreateReq fields 1..13, CreateRes, CVMInfoRes and RemoveVm match the spec numbers and types', async () => {
  const req = encode({
    1: 'warn', // agent_log_level
    2: Buffer.from('CA-PEM'), // agent_cvm_server_ca_cert (bytes)
    3: Buffer.from('KEY-PEM'), // agent_cvm_client_key (bytes)
    4: Buffer.from('CERT-PEM'), // agent_cvm_client_cert (bytes)
    5: 'srv:7001', // agent_cvm_server_url
    6: 'https://ca', // agent_cvm_ca_url
    7: '1h', // ttl
    8: 'tok', // agent_certs_token
    9: 'AK', // aws_access_key_id
    10: 'SK', // aws_secret_access_key
    11: 'https://s3', // aws_endpoint_url
    12: 'region-1', // aws_region
    13: 'kbs', // aa_kbs_params
  });
  const res = decode(await rawCall('CreateVm', req));
  const port = res[1].toString(); // forwarded_port: string, field 1
  const id = res[2].toString(); // cvm_id: string, field 2
  assert.match(port, /^\d+$/);
  assert.match(id, /^[0-9a-f-]{36}$/);
  const report = await readAgent(Number(port));
  assert.equal(report.environment, [
    'AGENT_LOG_LEVEL=warn', 'AGENT_CVM_GRPC_URL=srv:7001', `AGENT_CVM_ID=${id}`, 'AGENT_CERTS_TOKEN=tok', 'AGENT_CVM_CA_URL=https://ca',
    'AGENT_CVM_GRPC_CLIENT_CERT=/etc/certs/cert.pem', 'AGENT_CVM_GRPC_CLIENT_KEY=/etc/certs/key.pem', 'AGENT_CVM_GRPC_SERVER_CA_CERTS=/etc/certs/ca.pem',
    'AWS_ACCESS_KEY_ID=AK', 'AWS_SECRET_ACCESS_KEY=SK', 'AWS_ENDPOINT_URL=https://s3', 'AWS_REGION=region-1', '',
  ].join('\n'));
  assert.deepEqual(report.certs, { 'ca.pem': 6, 'cert.pem': 8, 'key.pem': 7 });
  assert.equal(report.cmdline, 'quiet console=null agent.aa_kbc_params=kbs');

  const info = decode(await rawCall('CVMInfo', encode({ 1: id })));
  assert.equal(info[1].toString(), id); // id
  assert.equal(info[2].toString(), 'edk2-stable202408'); // ovmf_version
  assert.equal(info[3], 4); // cpu_num: int32 varint
  assert.equal(info[4].toString(), 'EPYC'); // cpu_type
  assert.equal(info[5].toString(), 'quiet console=null agent.aa_kbc_params=kbs'); // kernel_cmd
  assert.equal(info[6].toString(), 'v0.8.0'); // eos_version

  const empty = await rawCall('RemoveVm', encode({ 1: id })); // google.protobuf.Empty
  assert.equal(empty.length, 0);
  await assert.rejects(rawCall('AttestationPolicy', encode({ 1: id })), (e) => e.code === grpc.status.NOT_FOUND);
});

test('unknown fields from a newer client are ignored, as proto3 requires', async () => {
  const req = Buffer.concat([encode({ 1: 'info' }), lenField(99, Buffer.from('future'))]);
  const res = decode(await rawCall('CreateVm', req));
  await rawCall('RemoveVm', encode({ 1: res[2].toString() }));
});
