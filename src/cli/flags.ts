/**
 * Command-line flags through Node's parseArgs, with the checks it leaves out: a flag given twice
 * is an error (parseArgs keeps the last silently), a negative number is a value (`--temperature -1`
 * would otherwise read as a flag), and numbers are plain decimals (`Number` would take `0x10` as 16
 * and `''` as 0).
 */
import { parseArgs, type ParseArgsConfig } from 'node:util';

export class UsageError extends Error {
  override name = 'UsageError';
}

type OptionsConfig = NonNullable<ParseArgsConfig['options']>;

const NEGATIVE_NUMBER = /^-(\d|\.\d)/;

/** Parses `argv` strictly (no positionals, no unknown flags) into the values of `options`. */
export function parseFlags<O extends OptionsConfig>(argv: readonly string[], options: O) {
  // `--name -1` → `--name=-1` for a flag that takes a value.
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

const DECIMAL = /^[+-]?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?$/i;

/** `raw` as a number if it is written as a decimal (`3`, `-0.5`, `1e-4`), else NaN. */
export function decimal(raw: string): number {
  return DECIMAL.test(raw.trim()) ? Number(raw) : NaN;
}
