/** The flag table: primary names, short names and aliases, negative numbers, a flag given twice under any name, and --help from the same table. */
import { describe, expect, it } from 'vitest';
import { FlagReader, flagHelp, parseFlagTable, type FlagTable } from '../src/cli/flags.js';

const TABLE: FlagTable = [
  { name: 'temperature', short: 't', value: '<x>', description: 'sampling temperature', default: '0' },
  { name: 'max-new-tokens', short: 'n', aliases: ['max-tokens'], value: '<n>', description: 'new tokens at most', default: '256' },
  { name: 'stop', value: '<text>', multiple: true, description: 'stop string' },
  { name: 'json', description: 'one JSON object' },
];

describe('parseFlagTable', () => {
  it('reads short names and aliases into the primary name, and remembers how each was written', () => {
    const parsed = parseFlagTable(['-t', '0.5', '--max-tokens', '9', '--stop', 'a', '--stop', 'b', '--json'], TABLE);
    expect(parsed.values).toEqual({ temperature: '0.5', 'max-new-tokens': '9', stop: ['a', 'b'], json: true });
    expect(parsed.written).toMatchObject({ temperature: '-t', 'max-new-tokens': '--max-tokens' });
  });

  it('takes a negative number as a value, after a long or a short name, then range-checks it by the name written', () => {
    expect(parseFlagTable(['--temperature', '-1'], TABLE).values.temperature).toBe('-1');
    expect(parseFlagTable(['-t', '-.5'], TABLE).values.temperature).toBe('-.5');
    const reader = new FlagReader(parseFlagTable(['-t', '-1'], TABLE));
    expect(() => reader.number('temperature', (x) => x >= 0, 'a number ≥ 0')).toThrow('-t must be a number ≥ 0, got "-1"');
  });

  it('refuses a flag given twice, under the same or another of its names', () => {
    expect(() => parseFlagTable(['-n', '1', '-n', '2'], TABLE)).toThrow('-n is given twice');
    expect(() => parseFlagTable(['-n', '1', '--max-new-tokens', '2'], TABLE)).toThrow('-n and --max-new-tokens are the same flag, given twice');
    expect(() => parseFlagTable(['--bogus'], TABLE)).toThrow(/Unknown option '--bogus'/);
  });

  it('writes one help line a flag: names, value, description, default', () => {
    expect(flagHelp(TABLE).split('\n')).toEqual([
      '  -t, --temperature <x>                   sampling temperature (default: 0)',
      '  -n, --max-new-tokens, --max-tokens <n>  new tokens at most (default: 256)',
      '      --stop <text>                       stop string',
      '      --json                              one JSON object',
    ]);
  });
});

describe('README', () => {
  it('lists the flags of train, generate and eval exactly as --help does', async () => {
    const { readFileSync } = await import('node:fs');
    const readme = readFileSync('README.md', 'utf8');
    const { TRAIN_FLAGS } = await import('../src/cli/train-options.js');
    const { GENERATE_FLAGS } = await import('../src/cli/generate-options.js');
    const { EVAL_FLAGS } = await import('../src/cli/eval-options.js');
    for (const table of [TRAIN_FLAGS, GENERATE_FLAGS, EVAL_FLAGS]) expect(readme).toContain(flagHelp(table));
  });
});
