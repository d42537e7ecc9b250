/** POSIX sh quoting, only where needed, so a logged command line pastes into bash unchanged. */
const SAFE = /^[A-Za-z0-9_@%+=:,./-]+$/;

export function shellQuote(arg: string): string {
  if (SAFE.test(arg)) return arg;
  return `'${arg.replaceAll("'", `'\\''`)}'`;
}

export function shellCommandLine(argv: readonly string[]): string {
  return argv.map(shellQuote).join(' ');
}
