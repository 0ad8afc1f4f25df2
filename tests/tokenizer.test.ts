import { expect, test } from 'vitest';
import { EOS_ID, PAD_ID, Tokenizer } from '../src/gpt/tokenizer.js';

const tokenizer = new Tokenizer();

test('GPT-2 BPE encodes and decodes offline, EOS = PAD = 50256', () => {
  expect(tokenizer.encode('Hello world')).toEqual([15496, 995]);
  expect(tokenizer.decode([15496, 995])).toBe('Hello world');
  expect(EOS_ID).toBe(50256);
  expect(PAD_ID).toBe(EOS_ID);
});

test('<|endoftext|> typed by a user is text, unless special tokens are allowed', () => {
  const asText = tokenizer.encode('a<|endoftext|>');
  expect(asText).not.toContain(EOS_ID);
  expect(tokenizer.decode(asText)).toBe('a<|endoftext|>');
  expect(tokenizer.encode('a<|endoftext|>', { allowSpecial: true })).toEqual([64, EOS_ID]);
});
