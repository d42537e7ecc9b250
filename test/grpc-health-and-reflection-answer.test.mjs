// grpc.health.v1.Health and server reflection answer through real clients, as grpcurl uses them.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { ROOT } from './helpers.mjs';
import { Daemon, fakeQemuEnv, tmpDir } from './daemon.mjs';

const load = (file) => grpc.loadPackageDefinition(protoLoader.loadSync(file, { keepCase: true, defaults: true, enums: String }));
const healthPkg = load(path.join(ROOT, 'node_modules/grpc-health-check/proto/health/v1/health.proto'));
const reflectionPkg = load(path.join(ROOT, 'node_modules/@grpc/reflection/build/proto/grpc/reflection/v1/reflection.proto'));

let daemon;
before(async () => {
  daemon = await Daemon.start(fakeQemuEnv(tmpDir()));
});
after(async () => {
  await daemon?.stop();
});

function check(service, target = `127.0.0.1:${daemon.port}`) {
  const client = new healthPkg.grpc.health.v1.Health(target, grpc.credentials.createInsecure());
  return new Promise((resolve, reject) => {
    client.Check({ service }, { deadline: Date.now() + 5_000 }, (err, res) => {
      client.close();
      return err ? reject(err) : resolve(res.status);
    });
  });
}

function reflect(request) {
  const client = new reflectionPkg.grpc.reflection.v1.ServerReflection(`127.0.0.1:${daemon.port}`, grpc.credentials.createInsecure());
  return new Promise((resolve, reject) => {
    const stream = client.ServerReflectionInfo({ deadline: Date.now() + 5_000 });
    stream.on('data', (res) => {
      stream.end();
      client.close();
      resolve(res);
    });
    stream.on('error', reject);
    stream.write(request);
  });
}

test('health says SERVING for the server and each service once started', async () => {
  assert.equal(await check(''), 'SERVING');
  assert.equal(await check('manager.ManagerService'), 'SERVING');
  // ManagerAdmin is on the admin socket, not on TCP (unless MANAGER_ADMIN_ON_GRPC_PORT and mutual TLS).
  await assert.rejects(check('manager.ManagerAdmin'), (e) => e.code === grpc.status.NOT_FOUND);
  assert.equal(await check('manager.ManagerAdmin', `unix:${daemon.adminSocket}`), 'SERVING');
  assert.equal(await check('manager.ManagerService', `unix:${daemon.adminSocket}`), 'SERVING');
  await assert.rejects(check('no.such.Service'), (e) => e.code === grpc.status.NOT_FOUND);
});

test('reflection lists the services and describes ManagerService', async () => {
  const list = await reflect({ list_services: '' });
  const names = list.list_services_response.service.map((s) => s.name).sort();
  for (const n of ['grpc.health.v1.Health', 'manager.ManagerAdmin', 'manager.ManagerService']) assert.ok(names.includes(n), names.join(','));
  const file = await reflect({ file_containing_symbol: 'manager.ManagerService' });
  const protos = file.file_descriptor_response.file_descriptor_proto;
  assert.ok(protos.length >= 1);
  assert.ok(protos.some((b) => Buffer.from(b).includes('CreateVm') && Buffer.from(b).includes('agent_cvm_server_ca_cert')));
});
