/**
 * The .proto files of the services the daemon serves, loaded as one package definition: for the
 * servers, and for the operator CLI's clients, which need no more (so the CLI does not load the
 * server side: its metrics, tracing and reflection).
 */
import { fileURLToPath } from 'node:url';
import * as protoLoader from '@grpc/proto-loader';
import { protoPath as healthProtoPath } from 'grpc-health-check';

const protoFile = (name: string) => fileURLToPath(new URL(`../../../proto/${name}`, import.meta.url));
export const PROTO_FILES = [protoFile('manager.proto'), protoFile('manager-admin.proto')];

export const LOADER_OPTIONS: protoLoader.Options = {
  keepCase: true,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
};

/** Every service this daemon serves (health included, for reflection). */
export function loadPackageDefinition(): protoLoader.PackageDefinition {
  return protoLoader.loadSync([...PROTO_FILES, healthProtoPath], LOADER_OPTIONS);
}
