/**
 * The streaming decoder: the per-token byte table agrees with js-tiktoken's decode for all 50257 ids;
 * text whose characters BPE splits across tokens streams without a replacement character or a lone
 * surrogate, and its pieces add up to the text; random id sequences (invalid UTF-8 included) stream
 * to exactly what a one-shot decode gives.
 */
import { describe, expect, it } from 'vitest';
import { EOS_ID, Tokenizer } from '../src/gpt/tokenizer.js';
import { gpt2TokenBytes, idsToBytes, Utf8Stream } from '../src/gpt/utf8-stream.js';
import { freshSeed, randomInts } from './helpers/random-data.js';

const tokenizer = new Tokenizer();

/** Well-formed UTF-16 (no lone surrogate), so it writes out as valid UTF-8. */
function isWellFormed(text: string): boolean {
  return Buffer.from(text, 'utf8').toString('utf8') === text;
}

function stream(ids: readonly number[]): { pieces: string[]; rest: string } {
  const s = new Utf8Stream();
  const pieces = ids.map((id) => s.push(id));
  return { pieces, rest: s.end() };
}

describe('token bytes', () => {
  it('every id decodes alone exactly as js-tiktoken decodes it; end-of-text is its text', () => {
    const table = gpt2TokenBytes();
    expect(table.length).toBe(50257);
    const decoder = new TextDecoder();
    const mismatches = table.map((_, id) => id).filter((id) => decoder.decode(table[id]) !== tokenizer.decode([id]));
    expect(mismatches).toEqual([]);
    expect(decoder.decode(table[EOS_ID])).toBe('<|endoftext|>');
    // Some tokens are fragments of a character (what makes streaming need care).
    expect(table.filter((b) => decoder.decode(b).includes('\uFFFD')).length).toBeGreaterThan(100);
  });

  it('idsToBytes concatenates the tokens\' bytes: the UTF-8 of the text', () => {
    const text = 'naïve café — 日本語 👍🏽';
    expect(Buffer.from(idsToBytes(tokenizer.encode(text))).equals(Buffer.from(text, 'utf8'))).toBe(true);
  });
});

describe('streaming', () => {
  const texts = [
    'Héllo wörld, ça va? Ünïcödé ǅ ẞ',
    '日本語のテキストと中文字符',
    'emoji 🎉🚀👍🏽 and flags 🇪🇸🇨🇱 and a family 👨‍👩‍👧',
    'math 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 ∀x∈ℝ, ligature ﬁ, Ω≈ç√∫',
  ];

  it.each(texts)('never emits half a character: %s', (text) => {
    const ids = tokenizer.encode(text);
    const { pieces, rest } = stream(ids);
    expect(pieces.join('') + rest).toBe(text);
    expect(rest).toBe('');
    for (const piece of pieces) {
      expect(piece).not.toContain('\uFFFD');
      expect(isWellFormed(piece)).toBe(true);
    }
  });

  it('the texts above do split characters across tokens (a token completing nothing emits "")', () => {
    const empty = texts.map((t) => stream(tokenizer.encode(t)).pieces.filter((p) => p === '').length);
    expect(empty.every((n) => n > 0)).toBe(true);
  });

  it('random id sequences (often invalid UTF-8) stream to what a one-shot decode gives', () => {
    const seed = freshSeed();
    const table = gpt2TokenBytes();
    const fragments = table.map((_, id) => id).filter((id) => new TextDecoder().decode(table[id]).includes('\uFFFD'));
    for (let trial = 0; trial < 20; trial++) {
      // Half fragments of characters, half arbitrary tokens.
      const ids = Array.from(randomInts(40, seed, trial, 50257), (id, i) => (i % 2 ? fragments[id % fragments.length] : id));
      const { pieces, rest } = stream(ids);
      expect(pieces.join('') + rest, `seed ${seed}, trial ${trial}`).toBe(tokenizer.decode(ids));
      for (const piece of [...pieces, rest]) expect(isWellFormed(piece), `seed ${seed}`).toBe(true);
    }
  });

  it('end() turns an unfinished character into U+FFFD and starts afresh', () => {
    const ids = tokenizer.encode('🎉');
    expect(ids.length).toBeGreaterThan(1);
    const s = new Utf8Stream();
    expect(s.push(ids[0])).toBe('');
    expect(s.end()).toBe('\uFFFD');
    expect(ids.map((id) => s.push(id)).join('') + s.end()).toBe('🎉');
  });

  it('rejects an id outside the vocabulary', () => {
    expect(() => new Utf8Stream().push(50257)).toThrow(/vocabulary/);
  });
});
