/**
 * Whether MANAGER_VM_UID_RANGE is safe to hand out: no account, group or subordinate id range
 * of the host may share an id with it, nor may systemd's dynamic ranges (a DynamicUser= service
 * or a container given one of those ids would share files and the firewall's verdicts with a
 * VM). Pure: the files' texts come in, the conflicts go out.
 */
export interface IdRange {
  first: number;
  last: number;
}

/** systemd's DynamicUser= range and its container range for nspawn's private users. */
export const SYSTEMD_RANGES: readonly (IdRange & { what: string })[] = [
  { first: 60001, last: 60513, what: "systemd's dynamic users of portable services (60001-60513)" },
  { first: 61184, last: 65519, what: "systemd's DynamicUser= range (61184-65519)" },
  { first: 524288, last: 1879048191, what: "systemd-nspawn's container range (524288-1879048191)" },
];

const overlaps = (a: IdRange, b: IdRange) => a.first <= b.last && b.first <= a.last;

export interface HostIdFiles {
  passwd?: string;
  group?: string;
  subuid?: string;
  subgid?: string;
}

/** Each conflict as one line naming what the range collides with. */
export function uidRangeConflicts(range: IdRange, files: HostIdFiles): string[] {
  const out: string[] = [];
  for (const r of SYSTEMD_RANGES) if (overlaps(range, r)) out.push(`overlaps ${r.what}`);
  const ids = (text: string | undefined, file: string, field: number) => {
    for (const line of (text ?? '').split('\n')) {
      const f = line.split(':');
      const id = Number(f[field]);
      if (f.length > field && f[field] !== '' && Number.isInteger(id) && id >= range.first && id <= range.last) {
        out.push(`${file} has ${f[0]} with id ${id}`);
      }
    }
  };
  ids(files.passwd, '/etc/passwd', 2);
  ids(files.group, '/etc/group', 2);
  const sub = (text: string | undefined, file: string) => {
    for (const line of (text ?? '').split('\n')) {
      const [owner, start, count] = line.split(':');
      const first = Number(start);
      const n = Number(count);
      if (!owner || !Number.isInteger(first) || !Number.isInteger(n) || n < 1) continue;
      if (overlaps(range, { first, last: first + n - 1 })) out.push(`${file} gives ${owner} ids ${first}-${first + n - 1}`);
    }
  };
  sub(files.subuid, '/etc/subuid');
  sub(files.subgid, '/etc/subgid');
  return out;
}
