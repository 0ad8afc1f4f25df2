import { getEncoding, type Tiktoken } from 'js-tiktoken';

/** GPT-2's end-of-text token; GPT-2 has no separate padding token, so it pads with this one too. */
export const EOS_ID = 50256;
export const PAD_ID = EOS_ID;

/** GPT-2 byte-level BPE, from the ranks bundled with js-tiktoken (no download). */
export class Tokenizer {
  readonly eosId = EOS_ID;
  readonly padId = PAD_ID;
  private readonly bpe: Tiktoken = getEncoding('gpt2');

  /**
   * `<|endoftext|>` typed by a user is encoded as plain text, never as the special token,
   * unless `allowSpecial` says otherwise: user data must not be able to end a sequence early.
   */
  encode(text: string, { allowSpecial = false } = {}): number[] {
    return allowSpecial ? this.bpe.encode(text, ['<|endoftext|>']) : this.bpe.encode(text, [], []);
  }

  decode(ids: readonly number[]): string {
    return this.bpe.decode([...ids]);
  }
}
