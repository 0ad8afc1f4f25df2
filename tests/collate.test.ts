/**
 * Collate on hand-made batches, every array written out: padding and its mask after the first
 * end-of-text, a sequence cut at the context limit, the prompt mask, and real encoded entries.
 */
import { describe, expect, it } from 'vitest';
import { EOS_ID, PAD_ID, Tokenizer } from '../src/gpt/tokenizer.js';
import { collate, countTruncated } from '../src/train/collate.js';
import { encodeEntry } from '../src/train/instruction-data.js';

const E = EOS_ID;
const P = PAD_ID;
// Prompt 10 11 12, response 13, end-of-text.
const A = { ids: [10, 11, 12, 13, E], promptLength: 3 };
// Much shorter: prompt 20, response 21.
const B = { ids: [20, 21, E], promptLength: 1 };
// Longer than a context of 4: prompt 30 31, response 32…35.
const C = { ids: [30, 31, 32, 33, 34, 35, E], promptLength: 2 };
// A response that is nothing but end-of-text.
const D = { ids: [40, 41, E], promptLength: 2 };

describe('collate', () => {
  it('pads to the longest sequence and counts targets up to and including the first end-of-text', () => {
    const batch = collate([A, B], 8, { maskPrompt: false });
    expect(batch.batchSize).toBe(2);
    expect(batch.seqLen).toBe(4);
    expect(batch.truncated).toBe(0);
    expect([...batch.inputs]).toEqual([
      10, 11, 12, 13,
      20, 21, E, P,
    ]);
    expect([...batch.targets]).toEqual([
      11, 12, 13, E,
      21, E, P, P,
    ]);
    expect([...batch.mask]).toEqual([
      1, 1, 1, 1,
      1, 1, 0, 0,
    ]);
  });

  it('with maskPrompt, drops the targets that predict prompt tokens', () => {
    const batch = collate([A, B, D], 8, { maskPrompt: true });
    expect([...batch.mask]).toEqual([
      0, 0, 1, 1, // 11 and 12 are prompt; 13 and the end-of-text count
      1, 1, 0, 0, // a one-token prompt has no prompt target
      0, 1, 0, 0, // only the end-of-text: the model still learns to stop
    ]);
  });

  it('cuts a sequence to contextLength + 1 tokens and counts all of its targets', () => {
    const batch = collate([A, C], 4, { maskPrompt: false });
    expect(batch.seqLen).toBe(4);
    expect(batch.truncated).toBe(1);
    expect([...batch.inputs]).toEqual([
      10, 11, 12, 13,
      30, 31, 32, 33,
    ]);
    expect([...batch.targets]).toEqual([
      11, 12, 13, E,
      31, 32, 33, 34,
    ]);
    expect([...batch.mask]).toEqual([
      1, 1, 1, 1,
      1, 1, 1, 1,
    ]);
    expect([...collate([A, C], 4, { maskPrompt: true }).mask]).toEqual([
      0, 0, 1, 1,
      0, 1, 1, 1,
    ]);
  });

  it('makes the batch only as long as its longest sequence after the cut', () => {
    const batch = collate([B, D], 1024, { maskPrompt: false });
    expect(batch.seqLen).toBe(2);
    expect([...batch.targets]).toEqual([21, E, 41, E]);
  });

  it('counts exactly the response and its end-of-text of real entries under maskPrompt', () => {
    const tokenizer = new Tokenizer();
    const examples = [
      encodeEntry({ instruction: 'Name a color.', input: '', output: 'Blue.' }, tokenizer),
      encodeEntry({ instruction: 'Translate the word into French.', input: 'cheese', output: "'Cheese' in French is 'fromage'." }, tokenizer),
    ];
    const batch = collate(examples, 1024, { maskPrompt: true });
    examples.forEach(({ ids, promptLength }, b) => {
      const row = batch.mask.subarray(b * batch.seqLen, (b + 1) * batch.seqLen);
      const counted = [...row.keys()].filter((j) => row[j] === 1);
      expect(counted.map((j) => batch.targets[b * batch.seqLen + j])).toEqual(ids.slice(promptLength));
    });
  });

  it('rejects an empty batch and a context shorter than one token', () => {
    expect(() => collate([], 8, { maskPrompt: false })).toThrow(/empty/);
    expect(() => collate([A], 0, { maskPrompt: false })).toThrow(/contextLength/);
  });
});

describe('countTruncated', () => {
  it('counts the examples longer than contextLength + 1 tokens', () => {
    expect(countTruncated([A, B, C, D], 8)).toBe(0);
    expect(countTruncated([A, B, C, D], 4)).toBe(1);
    expect(countTruncated([A, B, C, D], 3)).toBe(2);
  });
});
