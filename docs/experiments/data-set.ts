/**
 * The project's instruction data set (data/instructions.json) as the training loop sees it:
 * how much of it is prompt, response and end-of-text; how long the sequences are; which targets
 * count in the loss (src/train/collate.ts collate) against the notebook's ignore_index = 50256;
 * and how much padding a per-batch collate saves over padding the whole data set to one length.
 * Tokenised by src/train/instruction-data.ts (formatInput, encodeEntry) with GPT-2's BPE.
 *
 *   npx tsx docs/experiments/data-set.ts [--batch-size 8]
 *
 * Last line: {"experiment":"data-set","entries":…,"tokens":{…},"targets":{…},"padding":{…},"lengths":{…}}
 */
import { parseArgs } from 'node:util';
import { EOS_ID } from '../../src/gpt/tokenizer.js';
import { batchesOf, epochOrder } from '../../src/train/batches.js';
import { collate } from '../../src/train/collate.js';
import { fmt, loadData } from './quick-model.js';

const { values } = parseArgs({ strict: true, options: { 'batch-size': { type: 'string', default: '8' } } });
const batchSize = Number(values['batch-size']);
if (!Number.isInteger(batchSize) || batchSize < 1) throw new Error(`--batch-size must be a positive integer, got ${values['batch-size']}`);
const CONTEXT = 1024; // GPT-2's: no entry is cut
const { entries, examples } = loadData();

// --- where the tokens are ---
const total = examples.reduce((n, e) => n + e.ids.length, 0);
const prompt = examples.reduce((n, e) => n + e.promptLength, 0);
const eos = examples.length;
const response = total - prompt - eos;
// The template's fixed text before every instruction ("Below is an instruction … ### Instruction:\n"):
// the tokens every sequence starts with.
let preamble = 0;
while (examples.every((e) => e.ids[preamble] === examples[0].ids[preamble])) preamble++;
const template = examples.length * preamble;
const share = (n: number) => `${fmt((100 * n) / total, 1)}%`;

// --- which targets count ---
const all = collate(examples, CONTEXT, { maskPrompt: false });
const masked = collate(examples, CONTEXT, { maskPrompt: true });
const counted = (mask: Float32Array) => mask.reduce((n, m) => n + m, 0);
let eosCounted = 0;
all.mask.forEach((m, i) => m && all.targets[i] === EOS_ID && eosCounted++);
const realTargets = total - examples.length; // one fewer target than tokens per sequence

// --- padding: per batch (the loader's order: shuffled, seed 0) vs the whole data set at one length ---
const lengths = examples.map((e) => e.ids.length).sort((a, b) => a - b);
const longest = lengths.at(-1)!;
const positions = (order: number[]) =>
  batchesOf(order, batchSize).reduce((n, b) => {
    const batch = collate(b.map((i) => examples[i]), CONTEXT, { maskPrompt: false });
    return n + batch.batchSize * (batch.seqLen + 1); // tokens, the inputs' and the last target
  }, 0);
const indices = examples.map((_, i) => i);
const perBatch = positions(epochOrder(indices, 0, 0, true));
const sorted = positions([...indices].sort((a, b) => examples[a].ids.length - examples[b].ids.length));
const wholeSet = examples.length * longest;
const fullContext = examples.length * CONTEXT;
const pad = (slots: number) => `${slots} | ${slots - total} | ${fmt((100 * (slots - total)) / slots, 1)}%`;

console.log(`${entries.length} entries, ${total} tokens (GPT-2 BPE, Alpaca template, one end-of-text each)\n`);
console.log('| part | tokens | share |');
console.log('|---|---:|---:|');
console.log(`| prompt (template + instruction + input) | ${prompt} | ${share(prompt)} |`);
console.log(`| of which the fixed preamble (${preamble} tokens per entry) | ${template} | ${share(template)} |`);
console.log(`| response | ${response} | ${share(response)} |`);
console.log(`| end-of-text | ${eos} | ${share(eos)} |`);
console.log(`\nsequence length: shortest ${lengths[0]}, median ${lengths[lengths.length >> 1]}, longest ${longest} tokens`);
console.log(`summed loss of a sequence at the start (ln V = ${fmt(Math.log(50257))} per target): ${fmt((lengths[0] - 1) * Math.log(50257), 0)} nats for the shortest, ${fmt((longest - 1) * Math.log(50257), 0)} for the longest; the mean per target is ${fmt(Math.log(50257))} for both\n`);
console.log('| targets that count in the loss | targets |');
console.log('|---|---:|');
console.log(`| all real targets (collate, default) | ${counted(all.mask)} of ${realTargets} |`);
console.log(`| end-of-text targets among them | ${eosCounted} |`);
console.log(`| --mask-prompt (response + end-of-text) | ${counted(masked.mask)} |`);
console.log(`| the notebook's ignore_index = 50256 (every end-of-text dropped): all targets | ${counted(all.mask) - eosCounted} |`);
console.log(`| the same, response targets only | ${counted(masked.mask) - eosCounted} |`);
console.log(`\n| padding, batches of ${batchSize} | token slots | padding | padding share |`);
console.log('|---|---:|---:|---:|');
console.log(`| per batch, shuffled (collate in the loader) | ${pad(perBatch)} |`);
console.log(`| per batch, length-sorted batches | ${pad(sorted)} |`);
console.log(`| whole data set padded to its longest (${longest}) | ${pad(wholeSet)} |`);
console.log(`| whole data set padded to the context (${CONTEXT}) | ${pad(fullContext)} |`);
console.log(JSON.stringify({
  experiment: 'data-set', entries: entries.length, batch_size: batchSize,
  tokens: { total, prompt, template, response, eos },
  lengths: { shortest: lengths[0], median: lengths[lengths.length >> 1], longest },
  targets: { real: realTargets, counted: counted(all.mask), eos_counted: eosCounted, mask_prompt: counted(masked.mask), notebook: counted(all.mask) - eosCounted, notebook_mask_prompt: counted(masked.mask) - eosCounted },
  padding: { per_batch: perBatch, sorted_batches: sorted, whole_set: wholeSet, full_context: fullContext },
}));
