/**
 * Command-line flags from one table that drives both parsing and `--help`: each flag has its
 * primary name (Hugging Face's or llama.cpp's where they have one), an optional one-letter short
 * name, older names kept as aliases, a one-line description and its default.
 *
 * Parsing goes through Node's parseArgs, with the checks it leaves out: a flag given twice (under
 * any of its names) is an error (parseArgs keeps the last silently), a negative number is a value
 * (`--temperature -1` would otherwise read as a flag), and numbers are plain decimals (`Number`
 * would take `0x10` as 16 and `''` as 0).
 */
import { parseArgs, type ParseArgsConfig } from 'node:util';

export class UsageError extends Error {
  override name = 'UsageError';
}

export interface FlagSpec {
  /** Primary name, without the dashes. */
  name: string;
  /** One-letter name (`-m`). */
  short?: string;
  /** Other accepted names (older or shorter ones). */
  aliases?: readonly string[];
  /** The value's placeholder (`<n>`); a flag without one is a switch. */
  value?: string;
  /** May be given several times (the values are collected). */
  multiple?: boolean;
  description: string;
  /** Shown as "(default: …)". */
  default?: string;
}

export type FlagTable = readonly FlagSpec[];

/** Every command's: Dawn's own stderr messages are hidden unless asked for (src/node/driver-messages.ts). */
export const VERBOSE_FLAG: FlagSpec = { name: 'verbose', description: 'show the GPU driver\'s own messages on stderr (hidden otherwise)' };

/** Values by primary name: a string (or strings, for `multiple`) for a flag with a value, true for a switch. */
export type FlagValues = Record<string, string | string[] | true | undefined>;

export interface ParsedFlags {
  values: FlagValues;
  /** How each given flag was written (`--lr`, `-t`), by primary name: messages name what the user typed. */
  written: Record<string, string>;
}

type OptionsConfig = NonNullable<ParseArgsConfig['options']>;

const NEGATIVE_NUMBER = /^-(\d|\.\d)/;

/** Parses `argv` strictly (no positionals, no unknown flags) into values keyed by each flag's primary name. */
export function parseFlagTable(argv: readonly string[], table: FlagTable): ParsedFlags {
  const options: OptionsConfig = {};
  const primary = new Map<string, FlagSpec>();
  for (const spec of table) {
    for (const name of [spec.name, ...(spec.aliases ?? [])]) {
      options[name] = { type: spec.value === undefined ? 'boolean' : 'string', multiple: spec.multiple ?? false };
      primary.set(name, spec);
    }
    if (spec.short !== undefined) options[spec.name].short = spec.short;
  }
  const shorts = new Map(table.filter((s) => s.short !== undefined).map((s) => [s.short!, s]));
  // `--name -1` → `--name=-1` and `-t -1` → `-t-1` for a flag that takes a value.
  const args: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const spec = arg.startsWith('--') ? primary.get(arg.slice(2)) : /^-[^-]$/.test(arg) ? shorts.get(arg[1]) : undefined;
    if (spec?.value !== undefined && i + 1 < argv.length && NEGATIVE_NUMBER.test(argv[i + 1])) {
      args.push(arg.startsWith('--') ? `${arg}=${argv[++i]}` : `${arg}${argv[++i]}`); // -t-1: parseArgs's short name with its value
    } else {
      args.push(arg);
    }
  }
  let parsed;
  try {
    parsed = parseArgs({ args, options, strict: true, allowPositionals: false, tokens: true });
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  const values: FlagValues = {};
  const written: Record<string, string> = {};
  for (const token of parsed.tokens) {
    if (token.kind !== 'option') continue;
    const spec = primary.get(token.name)!;
    const name = token.rawName;
    if (spec.multiple) {
      values[spec.name] = [...((values[spec.name] as string[] | undefined) ?? []), token.value!];
      written[spec.name] = name;
      continue;
    }
    const before = written[spec.name];
    if (before !== undefined) {
      throw new UsageError(before === name ? `${name} is given twice` : `${before} and ${name} are the same flag, given twice`);
    }
    written[spec.name] = name;
    values[spec.name] = token.value ?? true;
  }
  return { values, written };
}

/**
 * Parses `argv` strictly into the values of parseArgs `options` (no table, so no aliases and no
 * help text), with the same checks: a flag given twice, negative numbers as values.
 */
export function parseFlags<O extends OptionsConfig>(argv: readonly string[], options: O) {
  const args: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const name = argv[i].startsWith('--') ? argv[i].slice(2) : null;
    if (name !== null && options[name]?.type === 'string' && i + 1 < argv.length && NEGATIVE_NUMBER.test(argv[i + 1])) {
      args.push(`${argv[i]}=${argv[++i]}`);
    } else {
      args.push(argv[i]);
    }
  }
  let parsed;
  try {
    parsed = parseArgs({ args, options, strict: true, allowPositionals: false, tokens: true });
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  const seen = new Set<string>();
  for (const token of parsed.tokens) {
    if (token.kind !== 'option' || options[token.name]?.multiple) continue;
    if (seen.has(token.name)) throw new UsageError(`--${token.name} is given twice`);
    seen.add(token.name);
  }
  return parsed.values;
}

/** The flags' part of `--help`: names, value, then the description and the default, one flag a line. */
export function flagHelp(table: FlagTable): string {
  const heads = table.map((spec) => {
    const names = [spec.short === undefined ? '    ' : `-${spec.short}, `, `--${spec.name}`, ...(spec.aliases ?? []).map((a) => `, --${a}`)].join('');
    return spec.value === undefined ? names : `${names} ${spec.value}`;
  });
  const width = Math.max(...heads.map((h) => h.length)) + 2;
  return table
    .map((spec, i) => `  ${heads[i].padEnd(width)}${spec.description}${spec.default === undefined ? '' : ` (default: ${spec.default})`}`)
    .join('\n');
}

const DECIMAL = /^[+-]?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?$/i;

/** `raw` as a number if it is written as a decimal (`3`, `-0.5`, `1e-4`), else NaN. */
export function decimal(raw: string): number {
  return DECIMAL.test(raw.trim()) ? Number(raw) : NaN;
}

/**
 * Reads typed values out of parsed flags, each check failing with the flag as it was written:
 * `--lr must be a positive number, got "-1"`.
 */
export class FlagReader {
  constructor(private readonly parsed: ParsedFlags) {}

  given(name: string): boolean {
    return this.parsed.values[name] !== undefined;
  }

  /** The flags given, by primary name. */
  names(): string[] {
    return Object.keys(this.parsed.values);
  }

  written(name: string): string {
    return this.parsed.written[name] ?? `--${name}`;
  }

  string(name: string): string | undefined {
    const v = this.parsed.values[name];
    return typeof v === 'string' ? v : undefined;
  }

  strings(name: string): string[] {
    const v = this.parsed.values[name];
    return Array.isArray(v) ? v : [];
  }

  switch(name: string): boolean {
    return this.parsed.values[name] === true;
  }

  number(name: string, check: (x: number) => boolean, rule: string): number | undefined {
    const raw = this.string(name);
    if (raw === undefined) return undefined;
    const x = decimal(raw);
    if (!Number.isFinite(x) || !check(x)) throw new UsageError(`${this.written(name)} must be ${rule}, got "${raw}"`);
    return x;
  }

  /** One of `choices`, or the error naming them. */
  choice<T extends string>(name: string, choices: readonly T[]): T | undefined {
    const raw = this.string(name);
    if (raw === undefined) return undefined;
    if (!(choices as readonly string[]).includes(raw)) {
      const list = choices.length === 2 ? choices.join(' or ') : `${choices.slice(0, -1).join(', ')} or ${choices.at(-1)}`;
      throw new UsageError(`${this.written(name)} must be ${list}, got "${raw}"`);
    }
    return raw as T;
  }
}

export const positiveInt = (x: number) => Number.isInteger(x) && x > 0;
export const nonNegativeInt = (x: number) => Number.isInteger(x) && x >= 0;
