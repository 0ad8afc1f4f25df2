/**
 * GPT-2's byte-level BPE (src/gpt/tokenizer.ts, js-tiktoken's `gpt2` ranks) against a word-level
 * tokenizer. The word vocabulary is built from the text available here: every instruction, input
 * and output of the training split of data/instructions.json (split as src/train.ts splits it),
 * lower-cased, words and punctuation marks as tokens, the 50,000 most frequent kept — a cap this
 * small corpus never reaches, so the word vocabulary is as generous as this data allows. Both are
 * then run on held-out text: the validation split, an English sentence, a Spanish one (a question
 * of the course assignment) and a line of code.
 *
 *   npx tsx docs/experiments/tokenizer.ts [--corpus <text file>]
 *
 * `--corpus` builds the word vocabulary from a text file of your own instead (a larger corpus gives
 * a fuller vocabulary and fewer unknown words, never none: names, numbers, typos, code, languages).
 *
 * Last line: {"experiment":"tokenizer","word_vocab":…,"samples":[{"name":…,"words":…,"bpe_tokens":…,"oov_words":…,"round_trip":…},…],"special":{…}}
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { EOS_ID } from '../../src/gpt/tokenizer.js';
import { fmt, loadData } from './quick-model.js';

const WORD_VOCAB_CAP = 50_000;
/** A word-level tokenizer: runs of letters/digits (with an apostrophe suffix: "it's"), or one punctuation mark. */
const words = (text: string): string[] => text.toLowerCase().match(/[\p{L}\p{N}]+(?:'\p{L}+)?|[^\s\p{L}\p{N}]/gu) ?? [];

const { tokenizer, entries, train, val } = loadData();
const textOf = (i: number) => [entries[i].instruction, entries[i].input, entries[i].output].filter(Boolean).join('\n');

const { values } = parseArgs({ strict: true, options: { corpus: { type: 'string' } } });
const corpusText = values.corpus === undefined ? train.map(textOf).join('\n') : readFileSync(values.corpus, 'utf8');
const corpusName = values.corpus ?? `the ${train.length} training entries of data/instructions.json`;
const counts = new Map<string, number>();
for (const w of words(corpusText)) counts.set(w, (counts.get(w) ?? 0) + 1);
const vocab = new Set([...counts].sort((a, b) => b[1] - a[1]).slice(0, WORD_VOCAB_CAP).map(([w]) => w));

const SAMPLES: [string, string][] = [
  ['held-out entries', val.map(textOf).join('\n')],
  ['English sentence', 'Instruction fine-tuning continues the training of a pretrained language model on prompts paired with the answers we want, so that it learns to follow instructions instead of merely continuing text.'],
  ['Spanish (the assignment)', '¿Por qué se proyecta una misma entrada en 3 matrices (Q, K y V) para el cálculo de atención? ¿Por qué no usar la propia entrada como vectores de query, key y value?'],
  ['code', "const cache = new KVCache(config, 1, backend); // 196608 bytes/token, isn't it? 🙂"],
];

const samples = SAMPLES.map(([name, text]) => {
  const ws = words(text);
  const ids = tokenizer.encode(text);
  return {
    name, words: ws.length, bpe_tokens: ids.length, oov_words: ws.filter((w) => !vocab.has(w)).length,
    round_trip: tokenizer.decode(ids) === text,
  };
});

const rare = 'tokenization';
const pieces = tokenizer.encode(` ${rare}`).map((id) => JSON.stringify(tokenizer.decode([id])));
const asText = tokenizer.encode('<|endoftext|>');
const asSpecial = tokenizer.encode('<|endoftext|>', { allowSpecial: true });

console.log(`word vocabulary: ${vocab.size} words and marks from ${corpusName} (cap ${WORD_VOCAB_CAP}); GPT-2 BPE: 50257 ids = 256 bytes + 50000 merges + 1 special\n`);
console.log('| text | words | GPT-2 tokens | tokens per word | words outside the word vocabulary | BPE unknown | BPE decode(encode(x)) = x |');
console.log('|---|---:|---:|---:|---:|---:|---|');
for (const s of samples) {
  console.log(`| ${s.name} | ${s.words} | ${s.bpe_tokens} | ${fmt(s.bpe_tokens / s.words)} | ${s.oov_words} (${fmt((100 * s.oov_words) / s.words, 1)}%) | 0 | ${s.round_trip ? 'yes' : 'NO'} |`);
}
console.log(`\n"${rare}" → ${pieces.length} BPE pieces: ${pieces.join(' + ')}`);
console.log(`"<|endoftext|>" typed as text → ${asText.length} ids [${asText.join(', ')}]; as the special token → [${asSpecial.join(', ')}] (EOS = PAD = ${EOS_ID})`);
console.log(JSON.stringify({
  experiment: 'tokenizer', corpus: corpusName, word_vocab: vocab.size, word_vocab_cap: WORD_VOCAB_CAP, samples,
  pieces: { word: rare, count: pieces.length }, special: { as_text: asText, as_special: asSpecial },
}));
