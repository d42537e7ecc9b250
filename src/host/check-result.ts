/** One line of `cocos-manager check` (and of the start-up preflight): pass, warn or fail, and how to fix. */
export type CheckStatus = 'pass' | 'warn' | 'fail';

export interface CheckResult {
  check: string;
  status: CheckStatus;
  detail: string;
  remedy: string;
}
