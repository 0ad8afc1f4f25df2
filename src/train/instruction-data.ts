/**
 * The instruction data set: a JSON array of {instruction, input, output}, or JSON Lines (one such
 * object a line, a `.jsonl` file), checked entry by entry,
 * put in the Alpaca template and tokenised as encode(prompt + response) + [end-of-text].
 *
 * Rules for a file: `instruction` and `output` are required non-empty strings; `input` may be a
 * string, or absent or null (both meaning "no input", as Alpaca-style files written by pandas have);
 * other keys are ignored. Every violation is a DataError naming the file, the entry and the field.
 * Reading the file from disk: src/node/instruction-file.ts.
 */
import { EOS_ID, type Tokenizer } from '../gpt/tokenizer.js';

export interface InstructionEntry {
  instruction: string;
  input: string;
  output: string;
}

/** A tokenised entry: its first `promptLength` tokens are the prompt, the rest the response and EOS. */
export interface EncodedExample {
  readonly ids: readonly number[];
  readonly promptLength: number;
}

/** Bad training data, as opposed to a bug: the command line reports the message and exits with code 2. */
export class DataError extends Error {
  override name = 'DataError';
}

/**
 * "at position 9" → "at position 9 (line 2, column 8)": JSON.parse counts characters, editors count
 * lines (newer V8 versions say the line themselves).
 */
function withLineAndColumn(message: string, text: string): string {
  const match = /at position (\d+)/.exec(message);
  if (!match || /\bline \d/.test(message)) return message;
  const before = text.slice(0, Number(match[1]));
  const line = before.split('\n').length;
  const column = before.length - before.lastIndexOf('\n');
  return message.replace(match[0], `${match[0]} (line ${line}, column ${column})`);
}

/** What a JSON value is, in words, for error messages. */
function kindOf(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  return typeof value === 'object' ? 'an object' : `a ${typeof value}`;
}

/** `where` names the entry in messages: "data.json: entry 3 (0-based)", "data.jsonl: line 4". */
function entryFrom(value: unknown, where: string): InstructionEntry {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new DataError(`${where} is ${kindOf(value)}, expected an object {instruction, input, output}`);
  }
  const record = value as Record<string, unknown>;
  const required = (field: 'instruction' | 'output'): string => {
    const v = record[field];
    if (v === undefined) throw new DataError(`${where} has no "${field}" field`);
    if (typeof v !== 'string') throw new DataError(`${where}: "${field}" must be a string, got ${kindOf(v)}`);
    if (v.trim() === '') throw new DataError(`${where}: "${field}" is empty`);
    return v;
  };
  const input = record.input ?? '';
  if (typeof input !== 'string') throw new DataError(`${where}: "input" must be a string, got ${kindOf(input)}`);
  return { instruction: required('instruction'), input, output: required('output') };
}

/**
 * The entries of a data set's JSON text; `source` (the file's name) begins every error message.
 * A byte-order mark at the start is ignored (editors on Windows may write one).
 */
export function parseInstructionData(text: string, source: string): InstructionEntry[] {
  const body = text.replace(/^\uFEFF/, '');
  let json: unknown;
  try {
    json = JSON.parse(body);
  } catch (e) {
    throw new DataError(`${source}: not valid JSON: ${withLineAndColumn((e as Error).message, body)}`);
  }
  if (!Array.isArray(json)) throw new DataError(`${source}: expected a JSON array of {instruction, input, output}, got ${kindOf(json)}`);
  if (json.length === 0) throw new DataError(`${source}: the data set is empty`);
  return json.map((value, index) => entryFrom(value, `${source}: entry ${index} (0-based)`));
}

/** The entries of a JSON Lines text (one object a line; blank lines are skipped); messages name the line. */
export function parseInstructionLines(text: string, source: string): InstructionEntry[] {
  const entries: InstructionEntry[] = [];
  for (const [i, line] of text.replace(/^\uFEFF/, '').split('\n').entries()) {
    if (line.trim() === '') continue;
    let value: unknown;
    try {
      value = JSON.parse(line);
    } catch (e) {
      throw new DataError(`${source}: line ${i + 1}: not valid JSON: ${(e as Error).message}`);
    }
    entries.push(entryFrom(value, `${source}: line ${i + 1}`));
  }
  if (entries.length === 0) throw new DataError(`${source}: the data set is empty`);
  return entries;
}

/** The Alpaca template's first paragraph, before its sections. */
export const ALPACA_PREAMBLE = 'Below is an instruction that describes a task. Write a response that appropriately completes the request.';

/** The template's section headers: a model that goes on past its response stops at them. */
export const ALPACA_SECTION_STOPS: readonly string[] = ['\n\n### Instruction:', '\n\n### Input:', '\n\n### Response:'];

/** The Alpaca template (DESIGN.md): the prompt a model answers, and the response it learns. */
export function formatInput({ instruction, input, output }: InstructionEntry): { prompt: string; response: string } {
  const prompt =
    ALPACA_PREAMBLE +
    `\n\n### Instruction:\n${instruction}` +
    (input ? `\n\n### Input:\n${input}` : '') +
    '\n\n### Response:\n';
  return { prompt, response: output };
}

/** The Alpaca prompt a model answers for an instruction and an optional input (the response follows it). */
export function alpacaPrompt({ instruction, input = '' }: { instruction: string; input?: string }): string {
  return formatInput({ instruction, input, output: '' }).prompt;
}

/**
 * BPE may merge across the prompt/response boundary (a response starting with "\n\n" makes the
 * template's final "\n" part of a "\n\n" token), so promptLength is the longest common prefix of
 * encode(prompt) and the full sequence: the tokens that are prompt and nothing else. A token that
 * straddles the boundary counts as response, so `--mask-prompt` never hides response text from the
 * loss. On the project's data set and the course's, encode(prompt) is a prefix of every sequence.
 */
export function encodeEntry(entry: InstructionEntry, tokenizer: Tokenizer): EncodedExample {
  const { prompt, response } = formatInput(entry);
  const ids = [...tokenizer.encode(prompt + response), EOS_ID];
  const promptIds = tokenizer.encode(prompt);
  let promptLength = 0;
  while (promptLength < promptIds.length && promptIds[promptLength] === ids[promptLength]) promptLength++;
  return { ids, promptLength };
}

export class InstructionDataset {
  readonly examples: readonly EncodedExample[];

  constructor(readonly entries: readonly InstructionEntry[], tokenizer: Tokenizer) {
    this.examples = entries.map((entry) => encodeEntry(entry, tokenizer));
  }

  get length(): number {
    return this.examples.length;
  }
}
