/**
 * The files a QEMU command line makes QEMU load into the guest at launch: the IGVM file
 * (SEV-SNP), the firmware (-bios, or the read-only pflash drive), the kernel and the initramfs.
 * Read back from the argv itself, so what is pinned is what QEMU was given, whatever the
 * configuration says now. Pure: argv in, list out (the inverse of args.ts for these options).
 */

export type LaunchInputRole = 'igvm' | 'firmware' | 'kernel' | 'initramfs';

export interface LaunchInput {
  role: LaunchInputRole;
  path: string;
}

/** `key=value,...` as QEMU reads it: `,,` is a literal comma; a leading bare word is `implied`. */
export function parseOptionString(text: string, implied: string): Map<string, string> {
  const parts: string[] = [];
  let cur = '';
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === ',' && text[i + 1] === ',') {
      cur += ',';
      i++;
    } else if (c === ',') {
      parts.push(cur);
      cur = '';
    } else {
      cur += c;
    }
  }
  parts.push(cur);
  const out = new Map<string, string>();
  parts.forEach((p, i) => {
    const eq = p.indexOf('=');
    if (eq >= 0) out.set(p.slice(0, eq), p.slice(eq + 1));
    else if (i === 0 && p !== '') out.set(implied, p);
  });
  return out;
}

const ON = new Set(['on', 'true', 'yes']);

function objectOptions(value: string): Map<string, string> {
  if (value.trimStart().startsWith('{')) {
    try {
      const o = JSON.parse(value) as Record<string, unknown>;
      return new Map(Object.entries(o).filter(([, v]) => typeof v === 'string') as [string, string][]);
    } catch {
      return new Map();
    }
  }
  return parseOptionString(value, 'qom-type');
}

export function launchInputs(argv: readonly string[]): LaunchInput[] {
  const found: LaunchInput[] = [];
  for (let i = 0; i < argv.length - 1; i++) {
    const opt = argv[i];
    const value = argv[i + 1]!;
    switch (opt) {
      case '-kernel':
        found.push({ role: 'kernel', path: value });
        break;
      case '-initrd':
        found.push({ role: 'initramfs', path: value });
        break;
      case '-bios':
        found.push({ role: 'firmware', path: value });
        break;
      case '-drive': {
        // The firmware code is the read-only pflash drive; the writable one holds its variables.
        const d = parseOptionString(value, 'file');
        const file = d.get('file');
        if (d.get('if') === 'pflash' && file && ON.has(d.get('readonly') ?? '')) found.push({ role: 'firmware', path: file });
        break;
      }
      case '-object': {
        const o = objectOptions(value);
        const file = o.get('file');
        if (o.get('qom-type') === 'igvm-cfg' && file) found.push({ role: 'igvm', path: file });
        break;
      }
      default:
        continue;
    }
    i++;
  }
  return found;
}
