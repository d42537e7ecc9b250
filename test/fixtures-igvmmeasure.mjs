// Stand-ins for igvmmeasure, written by the tests into a folder: each is a small sh script that
// records its arguments and behaves one way.
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';

export const DIGEST = 'a1'.repeat(24) + 'b2'.repeat(24); // 48 bytes

const SCRIPTS = {
  good: `echo "$@" >> "$(dirname "$0")/calls.log"\nsleep 0.2\necho ${DIGEST}\n`,
  'two-lines': `echo ${DIGEST}\necho ${DIGEST}\n`,
  'exit-1': `echo "igvmmeasure: cannot parse IGVM file $1" >&2\nexit 1\n`,
  hang: `exec sleep 30\n`,
  'not-hex': `echo "zz${DIGEST.slice(2)}"\n`,
  short: `echo ${'ab'.repeat(32)}\n`,
  // A digest that follows the file's content (its SHA-384), as the real tool's does.
  content: `echo "$@" >> "$(dirname "$0")/calls.log"\nsha384sum < "$1" | cut -c1-96\n`,
};

/** Makes dir/<kind>/igvmmeasure for every kind; returns the directory of one kind by name. */
export function makeIgvmmeasureStandIns(root) {
  for (const [kind, body] of Object.entries(SCRIPTS)) {
    fs.mkdirSync(path.join(root, kind), { recursive: true });
    fs.writeFileSync(path.join(root, kind, 'igvmmeasure'), `#!/bin/sh\n${body}`, { mode: 0o755 });
  }
  return (kind) => path.join(root, kind);
}

export function callsOf(dir) {
  try {
    return fs.readFileSync(path.join(dir, 'calls.log'), 'utf8').split('\n').filter(Boolean);
  } catch {
    return [];
  }
}

/** What the `content` stand-in prints for a file holding `data`. */
export function contentDigest(data) {
  return createHash('sha384').update(data).digest('hex');
}
