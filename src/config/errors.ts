/** A bad setting: the message names the variable, the value given and what is expected. */
export class ConfigError extends Error {
  constructor(
    readonly variable: string,
    message: string,
  ) {
    super(message);
    this.name = 'ConfigError';
  }
}

export function describe(variable: string, value: string | undefined, expected: string): ConfigError {
  return new ConfigError(variable, `invalid ${variable}=${JSON.stringify(value ?? '')}: ${expected}`);
}
