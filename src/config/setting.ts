/**
 * The mechanism behind settings.ts: a setting is declared once (its variable, other names it may
 * be given under, grammar, default, what an empty value means, doc line), a declaration is a tree
 * of settings shaped like the configuration it yields, and that configuration's type is inferred
 * from the tree. Pure: the environment comes in as a plain object.
 */
import { isDeepStrictEqual } from 'node:util';
import { type Grammar, GrammarError } from './grammar.js';

export class ConfigError extends Error {
  constructor(
    readonly variable: string,
    message: string,
  ) {
    super(message);
    this.name = 'ConfigError';
  }
}

/** The error of a bad value: the variable, the value given and what is expected, on one line. */
export function invalidValue(variable: string, value: string | undefined, expected: string): ConfigError {
  return new ConfigError(variable, `invalid ${variable}=${JSON.stringify(value ?? '')}: ${expected}`);
}

export interface SettingSpec<T> {
  /** The environment variable, as the docs and cocos-manager.env name it. */
  env: string;
  /**
   * Other names of the same variable (e.g. the Go manager's spelling where it differs from its
   * README). Any one may be set; two set to different values stop the start.
   */
  aliases?: readonly string[];
  grammar: Grammar<T>;
  /** The default as an operator would write it: parsed by `grammar`, so it obeys the same bounds. */
  default: string;
  /** Whether `NAME=` means the default; otherwise the empty string is parsed as a value. Default: the grammar's. */
  emptyMeansDefault?: boolean;
  /** One line: what the setting does (the comment above it in cocos-manager.env). */
  doc: string;
}

export class Setting<T> {
  readonly env: string;
  readonly aliases: readonly string[];
  readonly grammar: Grammar<T>;
  readonly default: string;
  readonly emptyMeansDefault: boolean;
  readonly doc: string;

  constructor(spec: SettingSpec<T>) {
    this.env = spec.env;
    this.aliases = spec.aliases ?? [];
    this.grammar = spec.grammar;
    this.default = spec.default;
    this.emptyMeansDefault = spec.emptyMeansDefault ?? spec.grammar.emptyMeansDefault;
    this.doc = spec.doc;
  }

  /** Every name this setting is read from, its own first. */
  get names(): readonly string[] {
    return [this.env, ...this.aliases];
  }
}

export function setting<T>(spec: SettingSpec<T>): Setting<T> {
  return new Setting(spec);
}

/** A tree of settings: groups become nested objects of the configuration, arrays become tuples. */
export interface Declaration {
  readonly [key: string]: Setting<unknown> | Declaration | readonly Setting<unknown>[];
}

/** The configuration a declaration yields: each setting replaced by the type of its value. */
export type ConfigOf<D> = D extends Setting<infer T> ? T : { -readonly [K in keyof D]: ConfigOf<D[K]> };

type Node = Setting<unknown> | Declaration | readonly Setting<unknown>[];

/** Every setting of a declaration, in the order declared. */
export function settingsIn(declaration: Declaration): Setting<unknown>[] {
  const walk = (node: Node): Setting<unknown>[] =>
    node instanceof Setting ? [node] : Object.values(node).flatMap((child: Node) => walk(child));
  return walk(declaration);
}

/** What the environment gave a setting: the name it came under and its text; no text: the default. */
export interface Given {
  name: string;
  text: string | undefined;
}

export interface Reading<D> {
  config: ConfigOf<D>;
  given(s: Setting<unknown>): Given;
}

type Env = Readonly<Record<string, string | undefined>>;

/**
 * Reads every setting of `declaration` from `env`, in the order declared; the first bad value
 * throws a ConfigError naming its variable.
 */
export function readSettings<D extends Declaration>(declaration: D, env: Env): Reading<D> {
  const given = new Map<Setting<unknown>, Given>();
  const read = (node: Node): unknown => {
    if (node instanceof Setting) {
      const { value, from } = readOne(node, env);
      given.set(node, from);
      return value;
    }
    if (Array.isArray(node)) return node.map(read);
    return Object.fromEntries(Object.entries(node).map(([key, child]: [string, Node]) => [key, read(child)]));
  };
  const config = read(declaration) as ConfigOf<D>;
  return {
    config,
    given: (s) => {
      const g = given.get(s);
      if (!g) throw new Error(`${s.env} is not a setting of this declaration`);
      return g;
    },
  };
}

function readOne<T>(s: Setting<T>, env: Env): { value: T; from: Given } {
  const set = s.names
    .map((name) => ({ name, text: env[name] }))
    .filter((g): g is { name: string; text: string } => g.text !== undefined && !(g.text === '' && s.emptyMeansDefault));
  const values = set.map((g) => parse(s, g.name, g.text));
  const [first, ...others] = set;
  if (first === undefined) {
    try {
      return { value: s.grammar.parse(s.default), from: { name: s.env, text: undefined } };
    } catch (err) {
      throw new Error(`the default of ${s.env} (${JSON.stringify(s.default)}) is not a value of its grammar: ${(err as Error).message}`);
    }
  }
  const other = others.find((_, i) => !isDeepStrictEqual(values[i + 1], values[0]));
  if (other) {
    throw new ConfigError(
      s.env,
      `conflicting ${first.name}=${JSON.stringify(first.text)} and ${other.name}=${JSON.stringify(other.text)}: two names of one setting; set one of them`,
    );
  }
  return { value: values[0]!, from: first };
}

function parse<T>(s: Setting<T>, name: string, text: string): T {
  try {
    return s.grammar.parse(text);
  } catch (err) {
    if (err instanceof GrammarError) throw invalidValue(name, text, err.message);
    throw err;
  }
}
