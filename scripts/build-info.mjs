// Writes dist/build-info.json: what /health reports as version, commit and build time.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';

const pkg = JSON.parse(fs.readFileSync('package.json', 'utf8'));
let commit = 'unknown';
try {
  commit = execFileSync('git', ['rev-parse', '--short=12', 'HEAD'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
} catch {
  /* not a git checkout */
}
fs.mkdirSync('dist', { recursive: true });
fs.writeFileSync(
  'dist/build-info.json',
  `${JSON.stringify({ version: pkg.version, commit, build_time: new Date().toISOString(), description: pkg.description })}\n`,
);
