// A small CBOR (RFC 8949) reader written for the tests, independent of the encoder the daemon
// uses: maps become Map, byte strings Buffer, tags {tag, value}, 64-bit integers BigInt when large.
export function decodeCbor(buf) {
  let i = 0;
  const need = (n) => {
    if (i + n > buf.length) throw new Error(`CBOR truncated at ${i}`);
  };
  const readArg = (info) => {
    if (info < 24) return info;
    const size = { 24: 1, 25: 2, 26: 4, 27: 8 }[info];
    if (!size) throw new Error(`unsupported additional info ${info} at ${i}`);
    need(size);
    let v = 0n;
    for (let k = 0; k < size; k++) v = (v << 8n) | BigInt(buf[i++]);
    return v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
  };
  const item = () => {
    need(1);
    const b = buf[i++];
    const major = b >> 5;
    const info = b & 31;
    switch (major) {
      case 0: return readArg(info);
      case 1: { const n = readArg(info); return typeof n === 'bigint' ? -1n - n : -1 - n; }
      case 2: { const n = readArg(info); need(n); const v = Buffer.from(buf.subarray(i, i + n)); i += n; return v; }
      case 3: { const n = readArg(info); need(n); const v = Buffer.from(buf.subarray(i, i + n)).toString('utf8'); i += n; return v; }
      case 4: { const n = readArg(info); return Array.from({ length: n }, item); }
      case 5: { const n = readArg(info); const m = new Map(); for (let k = 0; k < n; k++) { const key = item(); m.set(key, item()); } return m; }
      case 6: { const tag = readArg(info); return { tag, value: item() }; }
      case 7:
        if (info === 20) return false;
        if (info === 21) return true;
        if (info === 22) return null;
        throw new Error(`unsupported simple value ${info}`);
    }
  };
  const v = item();
  if (i !== buf.length) throw new Error(`${buf.length - i} trailing bytes after the CBOR item`);
  return v;
}
