// Test certificates made with the real openssl: CAs, a server certificate for 127.0.0.1/localhost,
// client certificates, and an expired one.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

const ossl = (args, cwd) => execFileSync('openssl', args, { cwd, stdio: ['ignore', 'pipe', 'pipe'], timeout: 20_000 });

function makeCa(dir, name) {
  ossl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '2', '-subj', `/CN=${name}`, '-keyout', `${name}.key`, '-out', `${name}.pem`], dir);
}

function issue(dir, ca, name, { server = false, expired = false } = {}) {
  ossl(['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-subj', `/CN=${name}`, '-keyout', `${name}.key`, '-out', `${name}.csr`], dir);
  const ext = path.join(dir, `${name}.ext`);
  fs.writeFileSync(ext, server
    ? 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n'
    : 'extendedKeyUsage=clientAuth\n');
  if (!expired) {
    ossl(['x509', '-req', '-in', `${name}.csr`, '-CA', `${ca}.pem`, '-CAkey', `${ca}.key`, '-CAcreateserial', '-days', '2', '-extfile', ext, '-out', `${name}.pem`], dir);
    return;
  }
  // openssl 3.0 x509 cannot back-date; `openssl ca` can.
  fs.writeFileSync(path.join(dir, 'index.txt'), '');
  fs.writeFileSync(path.join(dir, 'ca.cnf'), `[ca]\ndefault_ca=c\n[c]\ndatabase=index.txt\nnew_certs_dir=.\nserial=serial\ndefault_md=sha256\npolicy=p\nunique_subject=no\nx509_extensions=e\n[p]\ncommonName=supplied\n[e]\nextendedKeyUsage=clientAuth\n`);
  fs.writeFileSync(path.join(dir, 'serial'), '1000\n');
  ossl(['ca', '-batch', '-config', 'ca.cnf', '-cert', `${ca}.pem`, '-keyfile', `${ca}.key`, '-in', `${name}.csr`, '-out', `${name}.pem`, '-startdate', '20200101000000Z', '-enddate', '20200102000000Z', '-notext'], dir);
}

export function makePki(dir) {
  makeCa(dir, 'ca');
  makeCa(dir, 'otherca');
  issue(dir, 'ca', 'server', { server: true });
  issue(dir, 'ca', 'client');
  issue(dir, 'otherca', 'stranger');
  issue(dir, 'ca', 'expired', { expired: true });
  const read = (n) => fs.readFileSync(path.join(dir, n));
  return {
    dir,
    file: (n) => path.join(dir, n),
    read,
  };
}
