/**
 * Streaming token ids to text without ever printing half a character.
 *
 * GPT-2's byte-level BPE splits a multi-byte UTF-8 character across tokens ("é" can be one token,
 * an emoji often two or three), and js-tiktoken's `decode` turns a partial character into U+FFFD.
 * So each token is mapped to its raw bytes — a table built once from the gpt2 rank file that
 * js-tiktoken ships (its public `ranks/gpt2` export: base64 byte strings listed in rank order) —
 * and the bytes go through a `TextDecoder` in streaming mode, which holds back an incomplete
 * sequence until the bytes that complete it arrive.
 */
import gpt2Ranks from 'js-tiktoken/ranks/gpt2';

let table: Uint8Array[] | null = null;

/** atob gives one character per byte. */
function fromBase64(text: string): Uint8Array {
  const binary = atob(text);
  const out = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) out[i] = binary.charCodeAt(i);
  return out;
}

/**
 * The bytes of every GPT-2 token id (50257 entries; the end-of-text token is its text
 * `<|endoftext|>`), built on first use (~50 ms) and shared.
 *
 * The rank file is lines of `<anything> <first rank> <token> <token> …`, each token base64 and
 * ranks consecutive — the format js-tiktoken's own constructor parses.
 */
export function gpt2TokenBytes(): readonly Uint8Array[] {
  if (table !== null) return table;
  const bytes: Uint8Array[] = [];
  for (const line of gpt2Ranks.bpe_ranks.split('\n')) {
    if (line === '') continue;
    const [, first, ...tokens] = line.split(' ');
    const offset = Number.parseInt(first, 10);
    tokens.forEach((token, i) => (bytes[offset + i] = fromBase64(token)));
  }
  const encoder = new TextEncoder();
  for (const [text, id] of Object.entries(gpt2Ranks.special_tokens)) bytes[id] = encoder.encode(text);
  for (let id = 0; id < bytes.length; id++) {
    if (bytes[id] === undefined) throw new Error(`js-tiktoken's gpt2 ranks have no bytes for token ${id}`);
  }
  table = bytes;
  return table;
}

/**
 * Turns ids into text as it becomes complete UTF-8: `push(id)` returns the characters that id
 * completes (often '', when it ends mid-character), `end()` whatever is left (an incomplete tail
 * becomes U+FFFD, as a non-streaming decode would). Concatenating every piece equals decoding all the
 * ids at once.
 */
export class Utf8Stream {
  private decoder = new TextDecoder('utf-8', { fatal: false, ignoreBOM: true });
  private readonly bytes = gpt2TokenBytes();

  push(id: number): string {
    const b = this.bytes[id];
    if (b === undefined) throw new RangeError(`token id ${id} is not in GPT-2's vocabulary`);
    return this.decoder.decode(b, { stream: true });
  }

  end(): string {
    const rest = this.decoder.decode();
    this.decoder = new TextDecoder('utf-8', { fatal: false, ignoreBOM: true });
    return rest;
  }
}

/** The raw bytes of a sequence of ids (for tests and for exact stop-string work on bytes). */
export function idsToBytes(ids: readonly number[]): Uint8Array {
  const bytes = gpt2TokenBytes();
  const parts = ids.map((id) => bytes[id]);
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}
