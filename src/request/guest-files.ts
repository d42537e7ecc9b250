/** What the guest receives over 9P: the `environment` file and the certificates (the Go manager's layout). Pure. */
import type { VmRequest } from './create-request.js';

export const CERTS_MOUNT = '/etc/certs';

export function renderEnvironmentFile(vmId: string, r: VmRequest): string {
  const lines: [string, string][] = [
    ['AGENT_LOG_LEVEL', r.agentLogLevel],
    ['AGENT_CVM_GRPC_URL', r.serverUrl],
    ['AGENT_CVM_ID', vmId],
    ['AGENT_CERTS_TOKEN', r.certsToken],
    ['AGENT_CVM_CA_URL', r.caUrl],
  ];
  if (r.clientCert.length > 0) lines.push(['AGENT_CVM_GRPC_CLIENT_CERT', `${CERTS_MOUNT}/cert.pem`]);
  if (r.clientKey.length > 0) lines.push(['AGENT_CVM_GRPC_CLIENT_KEY', `${CERTS_MOUNT}/key.pem`]);
  if (r.serverCaCert.length > 0) lines.push(['AGENT_CVM_GRPC_SERVER_CA_CERTS', `${CERTS_MOUNT}/ca.pem`]);
  if (r.aws.accessKeyId !== '') lines.push(['AWS_ACCESS_KEY_ID', r.aws.accessKeyId]);
  if (r.aws.secretAccessKey !== '') lines.push(['AWS_SECRET_ACCESS_KEY', r.aws.secretAccessKey]);
  if (r.aws.endpointUrl !== '') lines.push(['AWS_ENDPOINT_URL', r.aws.endpointUrl]);
  if (r.aws.region !== '') lines.push(['AWS_REGION', r.aws.region]);
  return lines.map(([k, v]) => `${k}=${v}\n`).join('');
}

/** The certs share: file name → contents, only for the fields given. */
export function certificateFiles(r: VmRequest): { name: string; data: Uint8Array; secret: boolean }[] {
  const files: { name: string; data: Uint8Array; secret: boolean }[] = [];
  if (r.clientCert.length > 0) files.push({ name: 'cert.pem', data: r.clientCert, secret: false });
  if (r.clientKey.length > 0) files.push({ name: 'key.pem', data: r.clientKey, secret: true });
  if (r.serverCaCert.length > 0) files.push({ name: 'ca.pem', data: r.serverCaCert, secret: false });
  return files;
}
