/**
 * The instruction data set: the Alpaca template to the character, tokenisation with its prompt length
 * (including a response that BPE merges into the template), every malformed-file error, and the
 * project's own data set.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { EOS_ID, Tokenizer } from '../src/gpt/tokenizer.js';
import { DataError, encodeEntry, formatInput, InstructionDataset } from '../src/train/instruction-data.js';
import { loadInstructionFile } from '../src/node/instruction-file.js';

const tokenizer = new Tokenizer();
const PREAMBLE = 'Below is an instruction that describes a task. Write a response that appropriately completes the request.';

// "Below is an instruction … the request.\n\n### Instruction:\n", token by token.
const PREAMBLE_IDS = [21106, 318, 281, 12064, 326, 8477, 257, 4876, 13, 19430, 257, 2882, 326, 20431, 32543, 262, 2581, 13, 198, 198, 21017, 46486, 25, 198];
const SAY_HI = [25515, 23105, 13]; // "Say hi."
const RESPONSE_HEADER = [198, 198, 21017, 18261, 25, 198]; // "\n\n### Response:\n"
const INPUT_HEADER = [198, 198, 21017, 23412, 25, 198]; // "\n\n### Input:\n"

describe('formatInput', () => {
  it('writes the Alpaca template without an input section when the input is empty', () => {
    const { prompt, response } = formatInput({ instruction: 'Name a color.', input: '', output: 'Blue.' });
    expect(prompt).toBe(`${PREAMBLE}\n\n### Instruction:\nName a color.\n\n### Response:\n`);
    expect(response).toBe('Blue.');
  });

  it('adds the input section when there is an input', () => {
    const { prompt, response } = formatInput({ instruction: 'Translate into Spanish.', input: 'dog', output: 'perro' });
    expect(prompt).toBe(`${PREAMBLE}\n\n### Instruction:\nTranslate into Spanish.\n\n### Input:\ndog\n\n### Response:\n`);
    expect(response).toBe('perro');
  });
});

describe('encodeEntry', () => {
  it('encodes prompt + response + end-of-text, the prompt being its first promptLength tokens', () => {
    const entry = { instruction: 'Say hi.', input: '', output: 'Hi.' };
    const { ids, promptLength } = encodeEntry(entry, tokenizer);
    const prompt = [...PREAMBLE_IDS, ...SAY_HI, ...RESPONSE_HEADER];
    expect(ids).toEqual([...prompt, 17250, 13, EOS_ID]); // "Hi." then end-of-text
    expect(promptLength).toBe(prompt.length);
    expect(tokenizer.decode(ids)).toBe(`${formatInput(entry).prompt}Hi.<|endoftext|>`);
  });

  it('puts the input between the instruction and the response header', () => {
    const { ids, promptLength } = encodeEntry({ instruction: 'Say hi.', input: 'Bob', output: 'Hi Bob.' }, tokenizer);
    const prompt = [...PREAMBLE_IDS, ...SAY_HI, ...INPUT_HEADER, 18861, ...RESPONSE_HEADER]; // 18861 = "Bob"
    expect(ids).toEqual([...prompt, 17250, 5811, 13, EOS_ID]); // "Hi", " Bob", "."
    expect(promptLength).toBe(prompt.length);
  });

  it('counts a token that BPE merges across the prompt/response boundary as response', () => {
    // The template's final "\n" and a response starting with "\n\n" become "\n\n" (628) + "\n" (198).
    const { ids, promptLength } = encodeEntry({ instruction: 'Say hi.', input: '', output: '\n\nHi.' }, tokenizer);
    const sharedPrompt = [...PREAMBLE_IDS, ...SAY_HI, 198, 198, 21017, 18261, 25];
    expect(ids).toEqual([...sharedPrompt, 628, 198, 17250, 13, EOS_ID]);
    expect(promptLength).toBe(sharedPrompt.length);
  });
});

describe('loadInstructionFile', () => {
  const dir = mkdtempSync(join(tmpdir(), 'instruction-data-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  let files = 0;
  const write = (text: string): string => {
    const path = join(dir, `data-${files++}.json`);
    writeFileSync(path, text);
    return path;
  };
  const errorOf = (path: string): DataError => {
    try {
      loadInstructionFile(path);
    } catch (e) {
      expect(e).toBeInstanceOf(DataError);
      return e as DataError;
    }
    throw new Error(`${path} loaded without an error`);
  };

  it('loads entries (after a BOM), reads an absent or null input as no input and ignores other keys', () => {
    const path = write('\uFEFF' + JSON.stringify([
      { instruction: 'a', input: 'b', output: 'c' },
      { instruction: 'd', output: 'e' },
      { instruction: 'f', input: null, output: 'g', id: 7 },
    ]));
    expect(loadInstructionFile(path)).toEqual([
      { instruction: 'a', input: 'b', output: 'c' },
      { instruction: 'd', input: '', output: 'e' },
      { instruction: 'f', input: '', output: 'g' },
    ]);
  });

  it('reports a missing file', () => {
    const path = join(dir, 'nowhere.json');
    expect(errorOf(path).message).toBe(`${path}: no such file`);
  });

  it('refuses a folder, naming it, before reading anything', () => {
    expect(errorOf(dir).message).toBe(`${dir}: is a folder, not a data file`);
  });

  it('reports invalid JSON with the position, line and column', () => {
    const path = write('[\n  {"instruction": "a",}\n]');
    const { message } = errorOf(path);
    expect(message.startsWith(`${path}: not valid JSON: `)).toBe(true);
    expect(message).toMatch(/position 24\b.*line 2,? column 23\b/); // the "}" after the trailing comma
  });

  it('reports a top level that is not an array', () => {
    const path = write('{"instruction": "a", "input": "", "output": "b"}');
    expect(errorOf(path).message).toBe(`${path}: expected a JSON array of {instruction, input, output}, got an object`);
  });

  it('reports an empty data set', () => {
    const path = write('[]');
    expect(errorOf(path).message).toBe(`${path}: the data set is empty`);
  });

  it('names the entry that is not an object', () => {
    const path = write('[{"instruction": "a", "output": "b"}, "oops"]');
    expect(errorOf(path).message).toBe(`${path}: entry 1 (0-based) is a string, expected an object {instruction, input, output}`);
  });

  it('names the entry and the field that is missing, mistyped or empty', () => {
    const cases: [unknown, string][] = [
      [{ input: '', output: 'b' }, 'has no "instruction" field'],
      [{ instruction: 'a', input: '' }, 'has no "output" field'],
      [{ instruction: 3, input: '', output: 'b' }, ': "instruction" must be a string, got a number'],
      [{ instruction: 'a', input: '', output: null }, ': "output" must be a string, got null'],
      [{ instruction: 'a', input: ['x'], output: 'b' }, ': "input" must be a string, got an array'],
      [{ instruction: '  ', input: '', output: 'b' }, ': "instruction" is empty'],
      [{ instruction: 'a', input: '', output: '' }, ': "output" is empty'],
    ];
    for (const [entry, problem] of cases) {
      const path = write(JSON.stringify([{ instruction: 'ok', input: '', output: 'ok' }, { instruction: 'ok', output: 'ok' }, entry]));
      expect(errorOf(path).message).toBe(`${path}: entry 2 (0-based)${problem.startsWith(':') ? '' : ' '}${problem}`);
    }
  });
  describe('JSON Lines (.jsonl)', () => {
    const writeLines = (text: string): string => {
      const path = join(dir, `data-${files++}.jsonl`);
      writeFileSync(path, text);
      return path;
    };

    it('reads one entry a line, skipping blank lines, as the same entries a JSON array gives', () => {
      const entries = [{ instruction: 'a', input: 'x', output: 'b' }, { instruction: 'c', output: 'd' }];
      const path = writeLines(`${JSON.stringify(entries[0])}\n\n${JSON.stringify(entries[1])}\n`);
      expect(loadInstructionFile(path)).toEqual(loadInstructionFile(write(JSON.stringify(entries))));
      expect(loadInstructionFile(path)).toEqual([{ instruction: 'a', input: 'x', output: 'b' }, { instruction: 'c', input: '', output: 'd' }]);
    });

    it('names the line of invalid JSON, of a missing field, and an empty file', () => {
      const ok = JSON.stringify({ instruction: 'a', output: 'b' });
      const bad = writeLines(`${ok}\n${ok}\n{"instruction": "a",}\n`);
      expect(errorOf(bad).message).toMatch(new RegExp(`^${bad.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: line 3: not valid JSON: `));
      const missing = writeLines(`${ok}\n{"instruction": "a"}\n`);
      expect(errorOf(missing).message).toBe(`${missing}: line 2 has no "output" field`);
      const empty = writeLines('\n\n');
      expect(errorOf(empty).message).toBe(`${empty}: the data set is empty`);
    });
  });
});

describe('the default data set', () => {
  const path = 'data/instructions.json';
  const dataset = new InstructionDataset(loadInstructionFile(path), tokenizer);

  it('has at least 250 entries of non-empty strings, about a third with an input', () => {
    expect(dataset.length).toBeGreaterThanOrEqual(250);
    for (const { instruction, input, output } of dataset.entries) {
      expect([typeof instruction, typeof input, typeof output]).toEqual(['string', 'string', 'string']);
      expect(instruction.trim()).not.toBe('');
      expect(output.trim()).not.toBe('');
    }
    const withInput = dataset.entries.filter((e) => e.input !== '').length / dataset.length;
    expect(withInput).toBeGreaterThan(0.25);
    expect(withInput).toBeLessThan(0.5);
  });

  it('has no two entries with the same instruction and input', () => {
    const keys = new Set(dataset.entries.map((e) => JSON.stringify([e.instruction, e.input])));
    expect(keys.size).toBe(dataset.length);
  });

  it('fits every entry in 256 tokens, with encode(prompt) a prefix of every sequence', () => {
    dataset.examples.forEach((example, i) => {
      expect(example.ids.length).toBeLessThanOrEqual(256);
      expect(example.ids.at(-1)).toBe(EOS_ID);
      expect(example.promptLength).toBe(tokenizer.encode(formatInput(dataset.entries[i]).prompt).length);
    });
  });
});
