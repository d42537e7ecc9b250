/** Version, commit and build time of this build, written next to the code by `npm run build`. */
import fs from 'node:fs';

export interface BuildInfo {
  version: string;
  commit: string;
  build_time: string;
  description: string;
}

export function readBuildInfo(): BuildInfo {
  const fallback: BuildInfo = { version: '0.0.0', commit: 'unknown', build_time: 'unknown', description: 'cocos-manager' };
  try {
    return { ...fallback, ...JSON.parse(fs.readFileSync(new URL('../build-info.json', import.meta.url), 'utf8')) };
  } catch {
    return fallback;
  }
}
