/**
 * The MANAGER_PCR_VALUES file: expected vTPM PCR values, validated so a bad file stops the
 * start (naming the bad entry) instead of producing a policy no genuine VM can meet.
 */
export interface PcrValues {
  /** PCR index → lower-case hex; sha256 values are 32 bytes, sha384 values 48. */
  sha256: Map<number, string>;
  sha384: Map<number, string>;
}

export class PcrValuesError extends Error {}

const BANKS = { sha256: 32, sha384: 48 } as const;

export function parsePcrValues(text: string): PcrValues {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new PcrValuesError(`not valid JSON (${(err as Error).message})`);
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw new PcrValuesError('expected a JSON object');
  const top = json as Record<string, unknown>;
  const banks = (top.pcr_values ?? top) as Record<string, unknown>;
  if (typeof banks !== 'object' || banks === null || Array.isArray(banks)) throw new PcrValuesError('"pcr_values" must be an object');
  const out: PcrValues = { sha256: new Map(), sha384: new Map() };
  for (const key of Object.keys(banks)) {
    if (!(key in BANKS)) throw new PcrValuesError(`unknown PCR bank "${key}" (expected sha256 or sha384)`);
  }
  for (const [bank, size] of Object.entries(BANKS) as [keyof typeof BANKS, number][]) {
    const entries = banks[bank];
    if (entries === undefined) continue;
    if (typeof entries !== 'object' || entries === null || Array.isArray(entries)) throw new PcrValuesError(`"${bank}" must be an object of index: hex`);
    for (const [index, value] of Object.entries(entries as Record<string, unknown>)) {
      const where = `${bank}["${index}"]`;
      if (!/^(0|[1-9]\d?)$/.test(index) || Number(index) > 23) throw new PcrValuesError(`${where}: PCR index must be 0..23`);
      if (typeof value !== 'string') throw new PcrValuesError(`${where}: expected a hex string`);
      const hex = value.toLowerCase().replace(/^0x/, '');
      if (!/^[0-9a-f]*$/.test(hex) || hex.length !== size * 2) {
        throw new PcrValuesError(`${where}: expected hex of ${size} bytes (${size * 2} hex digits)`);
      }
      out[bank].set(Number(index), hex);
    }
  }
  return out;
}

/** The values as the file wrote them, in index order (for the JSON policy). */
export function pcrValuesToJson(p: PcrValues): { sha256: Record<string, string>; sha384: Record<string, string> } {
  const bank = (m: Map<number, string>) =>
    Object.fromEntries([...m.entries()].sort(([a], [b]) => a - b).map(([i, v]) => [String(i), v]));
  return { sha256: bank(p.sha256), sha384: bank(p.sha384) };
}
