// The floor for CVMInfo throughput: a bare @grpc/grpc-js server in its own process, answering
// CVMInfo with a fixed message from the same proto, with nothing else around it.
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const def = protoLoader.loadSync(path.join(root, 'proto', 'manager.proto'), { keepCase: true, longs: String, enums: String, defaults: true, oneofs: true });
const pkg = grpc.loadPackageDefinition(def).manager;
const server = new grpc.Server();
const answer = { ovmf_version: 'edk2-stable202408', cpu_num: 4, cpu_type: 'EPYC', kernel_cmd: 'quiet console=null', eos_version: '' };
const fail = (cb) => cb({ code: grpc.status.UNIMPLEMENTED });
server.addService(pkg.ManagerService.service, {
  CVMInfo: (call, cb) => cb(null, { id: call.request.id, ...answer }),
  CreateVm: (_c, cb) => fail(cb),
  RemoveVm: (_c, cb) => fail(cb),
  AttestationPolicy: (_c, cb) => fail(cb),
});
server.bindAsync(`127.0.0.1:${process.argv[2]}`, grpc.ServerCredentials.createInsecure(), (err) => {
  if (err) throw err;
  process.stdout.write('ready\n');
});
