// CreateVm answers only once QEMU has bound the VM's forwarded port, asked of the kernel with a
// bind of the port (QEMU's hostfwd listens on every IPv4 address): a listener on any address of
// it is seen, whoever owns it, and the look leaves the listener as it was.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { portIsListening } from '../dist/vm/proc.js';
import { tcpPortIsFree } from '../dist/host/port-probe.js';

async function listening(host) {
  const server = net.createServer((s) => s.end('still here'));
  const port = await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, host, () => resolve(server.address().port));
  });
  return { server, port };
}

for (const host of ['0.0.0.0', '127.0.0.1']) {
  test(`a listener on ${host} is seen, the port is not free, and the listener still answers`, async () => {
    const { server, port } = await listening(host);
    try {
      assert.equal(await portIsListening(port), true);
      assert.equal(await tcpPortIsFree(port), false);
      const answer = await new Promise((resolve, reject) => {
        const c = net.connect(port, '127.0.0.1');
        let got = '';
        c.on('data', (d) => { got += d; });
        c.on('end', () => resolve(got));
        c.on('error', reject);
      });
      assert.equal(answer, 'still here');
    } finally {
      server.close();
    }
  });
}
