// The client key, AWS secret key and certs token never appear in a log line (debug level
// included) or an error message, on the success path, a failed start, a rejected request and a
// removal; request data never goes through a shell; non-UTF-8 input is stored harmlessly.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { ROOT } from './helpers.mjs';
import { Daemon, call, fakeQemuEnv, readAgent, tmpDir } from './daemon.mjs';

const KEY = 'MIIEvQIBADANBgkqhkiG9w0BAQEFAASC-client-key-secret';
const AWS = 'wJalrXUtnFEMI/K7MDENG/bPxRfiCY-aws-secret';
const TOKEN = 'certs-token-secret-0f1e2d3c';

test('secrets never reach logs or error messages, at debug level, on every path', async () => {
  const state = tmpDir();
  const modeFile = path.join(tmpDir('cocos-mode-'), 'mode');
  fs.writeFileSync(modeFile, 'normal');
  const d = await Daemon.start(fakeQemuEnv(state, { MANAGER_LOG_LEVEL: 'debug', FAKE_QEMU_MODE_FILE: modeFile }));
  const client = d.client();
  const errors = [];
  const secrets = { agent_cvm_client_key: Buffer.from(`-----BEGIN PRIVATE KEY-----\n${KEY}\n-----END PRIVATE KEY-----\n`), aws_secret_access_key: AWS, agent_certs_token: TOKEN };
  try {
    const vm = await call(client, 'CreateVm', { ...secrets, ttl: '1h' });
    await call(client, 'CVMInfo', { id: vm.cvm_id });
    await call(client, 'RemoveVm', { cvm_id: vm.cvm_id });
    fs.writeFileSync(modeFile, 'exit-early');
    await call(client, 'CreateVm', secrets).catch((e) => errors.push(e.details));
    fs.writeFileSync(modeFile, 'normal');
    await call(client, 'CreateVm', { ...secrets, ttl: 'bad' }).catch((e) => errors.push(e.details));
    await call(client, 'CreateVm', { ...secrets, aws_secret_access_key: `${AWS}\n` }).catch((e) => errors.push(e.details));
    await call(client, 'CreateVm', { ...secrets, agent_certs_token: `${TOKEN}\0` }).catch((e) => errors.push(e.details));
    assert.equal(errors.length, 4);
  } finally {
    client.close();
    await d.stop();
  }
  const everything = `${d.allLogText()}\n${errors.join('\n')}`;
  assert.ok(d.logs.lines.some((l) => l.level === 'debug'), 'debug lines were captured');
  for (const secret of [KEY, AWS, TOKEN]) assert.equal(everything.includes(secret), false, `leaked: ${secret}`);
});

test('non-UTF-8 bytes in a string field are stored harmlessly (as U+FFFD), never split a line', async () => {
  const d = await Daemon.start(fakeQemuEnv(tmpDir()));
  const raw = new grpc.Client(`127.0.0.1:${d.port}`, grpc.credentials.createInsecure());
  try {
    // CreateReq field 1 (agent_log_level) = bytes ff fe 0a? no: ff fe 41, invalid UTF-8 without a newline.
    const body = Buffer.from([0x0a, 0x03, 0xff, 0xfe, 0x41]);
    const res = await new Promise((resolve, reject) =>
      raw.makeUnaryRequest('/manager.ManagerService/CreateVm', (b) => b, (b) => b, body, { deadline: Date.now() + 10_000 }, (e, r) => (e ? reject(e) : resolve(r))));
    // CreateRes: field 1 forwarded_port (string), field 2 cvm_id.
    const port = res.subarray(2, 2 + res[1]).toString();
    const report = await readAgent(Number(port));
    assert.match(report.environment, /^AGENT_LOG_LEVEL=\ufffd+A\n/);
    assert.equal(report.environment.split('\n').length, 6);
  } finally {
    raw.close();
    await d.stop();
  }
});

test('no request data can reach a shell: processes are spawned without one', () => {
  // Behaviour is covered by the hostile-input tests ($(touch …) in every field creates nothing);
  // this keeps a future change from adding a shell by accident.
  const files = [];
  const walk = (dir) => {
    for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
      const p = path.join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else if (p.endsWith('.ts') && !p.includes('/generated/')) files.push(p);
    }
  };
  walk(path.join(ROOT, 'src'));
  for (const f of files) {
    const text = fs.readFileSync(f, 'utf8');
    assert.doesNotMatch(text, /shell:\s*true|execaCommand|\$\(|child_process['"]\)?\.exec\b|\bexecSync\b|\bspawn\([^)]*shell/, f);
    // One exception, on purpose: the state-directory lock runs flock(1) with a fixed argv at start,
    // where execa's import would cost ~140 ms. It must stay free of a shell and of any input.
    if (path.relative(ROOT, f) === path.join('src', 'host', 'state-dir-lock.ts')) {
      assert.match(text, /spawn\('flock', \[\.\.\.mode, '--conflict-exit-code', String\(CONFLICT\), file, 'cat'\]/);
      assert.doesNotMatch(text, /'sh'|'-c'|shell:/);
      continue;
    }
    // And the guest firewall: nft with a fixed argv, the ruleset on its stdin (made from parsed
    // settings only), before the daemon serves, where execa's import would cost as much.
    if (path.relative(ROOT, f) === path.join('src', 'host', 'guest-firewall.ts')) {
      assert.match(text, /execFile\('nft', args, \{/);
      assert.doesNotMatch(text, /'sh'|'-c'|shell:|execSync|spawnSync/);
      continue;
    }
    assert.doesNotMatch(text, /from 'node:child_process'/, `${f}: spawn through execa (no shell), not child_process`);
  }
});
