/**
 * GPT-2's state dict in the Hugging Face layout (`config.json` + `model.safetensors`), with the
 * canonical tensor names our model uses (`wte.weight`, `h.N.attn.c_attn.weight` [C, 3C] in Conv1D
 * layout with Q|K|V columns, …). Reading also accepts the `transformer.` prefix, a tied
 * `lm_head.weight`, the causal-mask buffers, and the book-style names of the course notebook's
 * GPTModel (`tok_emb`, `trf_blocks.N.att.W_query`, … in nn.Linear [out, in] layout).
 * Files in folders: src/node/weights-folder.ts; the same model as bytes: src/gpt/model-bytes.ts.
 */
import { halfDTypeOf, widen16 } from '../tensor/half.js';
import { isTied, type GPT2Config } from './config.js';
import { WeightsError, type HostTensor, type StateDict, type TensorHeader } from './safetensors.js';

/** What callers hand in: the model's own host tensors have read-only shapes. A Uint16Array holds f16 bit patterns, a Bfloat16Array bf16 ones. */
export type TensorIn = { readonly shape: readonly number[]; readonly data: Float32Array | Uint16Array };

/** A tensor's values as f32 (16 bits widened, exactly): the renames that rearrange values work in f32. */
const floats = (data: Float32Array | Uint16Array): Float32Array => (data instanceof Uint16Array ? widen16(data) : data);

export const CONFIG_FILE = 'config.json';
export const WEIGHTS_FILE = 'model.safetensors';

/** Every tensor the model has, with its shape: the contract of a normalised state dict. */
export function expectedShapes(config: GPT2Config): Map<string, number[]> {
  const { n_embd: C, vocab_size: V, n_positions: P } = config;
  const shapes = new Map<string, number[]>([
    ['wte.weight', [V, C]],
    ['wpe.weight', [P, C]],
  ]);
  for (let i = 0; i < config.n_layer; i++) {
    const layer: [string, number[]][] = [
      ['ln_1.weight', [C]], ['ln_1.bias', [C]],
      ['attn.c_attn.weight', [C, 3 * C]], ['attn.c_attn.bias', [3 * C]],
      ['attn.c_proj.weight', [C, C]], ['attn.c_proj.bias', [C]],
      ['ln_2.weight', [C]], ['ln_2.bias', [C]],
      ['mlp.c_fc.weight', [C, 4 * C]], ['mlp.c_fc.bias', [4 * C]],
      ['mlp.c_proj.weight', [4 * C, C]], ['mlp.c_proj.bias', [C]],
    ];
    for (const [name, shape] of layer) shapes.set(`h.${i}.${name}`, shape);
  }
  shapes.set('ln_f.weight', [C]);
  shapes.set('ln_f.bias', [C]);
  if (!isTied(config)) shapes.set('lm_head.weight', [V, C]);
  return shapes;
}

const show = (shape: readonly number[]): string => `[${shape.join(', ')}]`;

/** Missing, misshapen and unexpected tensors, all listed in one error naming the file. */
export function checkStateDict(dict: ReadonlyMap<string, TensorIn>, config: GPT2Config, file: string): void {
  const expected = expectedShapes(config);
  const problems: string[] = [];
  for (const [name, shape] of expected) {
    const t = dict.get(name);
    if (t === undefined) problems.push(`missing ${name} ${show(shape)}`);
    else if (show(t.shape) !== show(shape)) problems.push(`${name} has shape ${show(t.shape)}, expected ${show(shape)}`);
    else if (t.data.length !== shape.reduce((a, b) => a * b, 1)) problems.push(`${name} holds ${t.data.length} values for shape ${show(shape)}`);
  }
  for (const name of dict.keys()) if (!expected.has(name)) problems.push(`unexpected tensor ${name}`);
  if (problems.length > 0) {
    const { n_embd, n_layer, n_head, n_positions, vocab_size } = config;
    const summary = `n_embd ${n_embd}, n_layer ${n_layer}, n_head ${n_head}, n_positions ${n_positions}, vocab_size ${vocab_size}, ${isTied(config) ? 'tied' : 'untied'} head`;
    throw new WeightsError(`${file}: does not match the GPT-2 config (${summary}):\n  ${problems.join('\n  ')}`);
  }
}

/** [rows, cols] → [cols, rows]: nn.Linear's [out, in] into Conv1D's [in, out]. */
function transposed(t: HostTensor, name: string, file: string): HostTensor {
  if (t.shape.length !== 2) throw new WeightsError(`${file}: ${name} has shape ${show(t.shape)}, expected a matrix`);
  const [rows, cols] = t.shape;
  const data = floats(t.data);
  const out = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c * rows + r] = data[r * cols + c];
  return { shape: [cols, rows], data: out };
}

const BOOK_RENAMES: [RegExp, string, 'transpose'?][] = [
  [/^tok_emb\.weight$/, 'wte.weight'],
  [/^pos_emb\.weight$/, 'wpe.weight'],
  [/^final_norm\.scale$/, 'ln_f.weight'],
  [/^final_norm\.shift$/, 'ln_f.bias'],
  [/^out_head\.weight$/, 'lm_head.weight'],
  [/^trf_blocks\.(\d+)\.norm([12])\.scale$/, 'h.$1.ln_$2.weight'],
  [/^trf_blocks\.(\d+)\.norm([12])\.shift$/, 'h.$1.ln_$2.bias'],
  [/^trf_blocks\.(\d+)\.att\.out_proj\.weight$/, 'h.$1.attn.c_proj.weight', 'transpose'],
  [/^trf_blocks\.(\d+)\.att\.out_proj\.bias$/, 'h.$1.attn.c_proj.bias'],
  [/^trf_blocks\.(\d+)\.ff\.layers\.0\.weight$/, 'h.$1.mlp.c_fc.weight', 'transpose'],
  [/^trf_blocks\.(\d+)\.ff\.layers\.0\.bias$/, 'h.$1.mlp.c_fc.bias'],
  [/^trf_blocks\.(\d+)\.ff\.layers\.2\.weight$/, 'h.$1.mlp.c_proj.weight', 'transpose'],
  [/^trf_blocks\.(\d+)\.ff\.layers\.2\.bias$/, 'h.$1.mlp.c_proj.bias'],
];

/** Buffers, not parameters: causal masks of HF's GPT2Attention and of the notebook's attention. */
const IGNORED = /^(h\.\d+\.attn\.(bias|masked_bias)|trf_blocks\.\d+\.att\.mask)$/;
const BOOK_QKV = /^trf_blocks\.(\d+)\.att\.W_(query|key|value)\.(weight|bias)$/;
const QKV_ORDER = ['query', 'key', 'value'] as const;

/**
 * The notebook's separate W_query, W_key, W_value ([C, C] each, [out, in]) as one c_attn [C, 3C]
 * with Q|K|V column blocks. Without biases (its qkv_bias=False) the bias is zero, which is the same
 * function.
 */
function fuseQkv(layer: string, parts: Map<string, HostTensor>, file: string): [string, HostTensor][] {
  const source = (kind: string, param: string) => `trf_blocks.${layer}.att.W_${kind}.${param}`;
  const weights = QKV_ORDER.map((kind) => {
    const t = parts.get(`${kind}.weight`);
    if (t === undefined) throw new WeightsError(`${file}: missing ${source(kind, 'weight')} (needed to build h.${layer}.attn.c_attn)`);
    return transposed(t, source(kind, 'weight'), file);
  });
  const [C, D] = weights[0].shape;
  if (weights.some((w) => w.shape[0] !== C || w.shape[1] !== D)) {
    throw new WeightsError(`${file}: W_query, W_key, W_value of trf_blocks.${layer} differ in shape`);
  }
  const weight = new Float32Array(C * 3 * D);
  weights.forEach((w, k) => {
    for (let r = 0; r < C; r++) weight.set(w.data.subarray(r * D, (r + 1) * D), r * 3 * D + k * D);
  });
  const biases = QKV_ORDER.map((kind) => parts.get(`${kind}.bias`));
  const bias = new Float32Array(3 * D);
  if (biases.some((b) => b !== undefined)) {
    biases.forEach((b, k) => {
      if (b === undefined || b.data.length !== D) {
        throw new WeightsError(`${file}: ${source(QKV_ORDER[k], 'bias')} is ${b ? `of shape ${show(b.shape)}` : 'missing'}, expected [${D}]`);
      }
      bias.set(floats(b.data), k * D);
    });
  }
  return [
    [`h.${layer}.attn.c_attn.weight`, { shape: [C, 3 * D], data: weight }],
    [`h.${layer}.attn.c_attn.bias`, { shape: [3 * D], data: bias }],
  ];
}

function sameValues(a: HostTensor, b: HostTensor): boolean {
  const [x, y] = [floats(a.data), floats(b.data)];
  return show(a.shape) === show(b.shape) && x.every((v, i) => v === y[i]);
}

/**
 * A raw state dict under the canonical names (tensors are shared, not copied, unless transposed).
 * Names it does not know pass through for `checkStateDict` to report.
 */
export function normalizeStateDict(raw: ReadonlyMap<string, HostTensor>, config: GPT2Config, file: string): StateDict {
  const out: StateDict = new Map();
  const origin = new Map<string, string>();
  const put = (name: string, t: HostTensor, from: string) => {
    const earlier = origin.get(name);
    if (earlier !== undefined) throw new WeightsError(`${file}: both ${earlier} and ${from} give ${name}`);
    origin.set(name, from);
    out.set(name, t);
  };
  const qkv = new Map<string, Map<string, HostTensor>>();
  for (const [rawName, t] of raw) {
    const name = rawName.startsWith('transformer.') ? rawName.slice('transformer.'.length) : rawName;
    if (IGNORED.test(name)) continue;
    const fused = BOOK_QKV.exec(name);
    if (fused) {
      const [, layer, kind, param] = fused;
      if (!qkv.has(layer)) qkv.set(layer, new Map());
      qkv.get(layer)!.set(`${kind}.${param}`, t);
      continue;
    }
    const rename = BOOK_RENAMES.find(([pattern]) => pattern.test(name));
    if (rename === undefined) put(name, t, rawName);
    else put(name.replace(rename[0], rename[1]), rename[2] ? transposed(t, rawName, file) : t, rawName);
  }
  for (const [layer, parts] of qkv) for (const [name, t] of fuseQkv(layer, parts, file)) put(name, t, `trf_blocks.${layer}.att.W_*`);

  const head = out.get('lm_head.weight');
  const wte = out.get('wte.weight');
  if (head !== undefined && isTied(config) && wte !== undefined) {
    if (!sameValues(head, wte)) {
      throw new WeightsError(
        `${file}: ${origin.get('lm_head.weight')} differs from the token embedding, but the config ties them ` +
          '(set "tie_word_embeddings": false in config.json to keep a separate output head)',
      );
    }
    out.delete('lm_head.weight');
  }
  return out;
}

/** Tensors holding NaN or ±Infinity, with how many such values each holds. */
export function nonFiniteTensors(dict: ReadonlyMap<string, { readonly data: Float32Array | Uint16Array }>): { name: string; count: number }[] {
  const found: { name: string; count: number }[] = [];
  for (const [name, { data }] of dict) {
    let count = 0;
    if (data instanceof Uint16Array) {
      const exponent = halfDTypeOf(data) === 'bf16' ? 0x7f80 : 0x7c00;
      for (let i = 0; i < data.length; i++) if ((data[i] & exponent) === exponent) count++; // exponent all ones: ±Infinity or NaN
    } else {
      for (let i = 0; i < data.length; i++) if (!Number.isFinite(data[i])) count++;
    }
    if (count > 0) found.push({ name, count });
  }
  return found;
}

/**
 * The shape a raw file name must have under `config`, through the same renames as
 * normalizeStateDict; undefined for a name the model does not know.
 */
function expectedRawShape(rawName: string, config: GPT2Config, expected: ReadonlyMap<string, number[]>): readonly number[] | 'buffer' | undefined {
  const name = rawName.startsWith('transformer.') ? rawName.slice('transformer.'.length) : rawName;
  const { n_embd: C, vocab_size: V } = config;
  if (IGNORED.test(name)) return 'buffer';
  const fused = BOOK_QKV.exec(name);
  if (fused) return fused[3] === 'weight' ? [C, C] : [C];
  if (name === 'lm_head.weight' || name === 'out_head.weight') return [V, C];
  const rename = BOOK_RENAMES.find(([pattern]) => pattern.test(name));
  const target = rename ? name.replace(rename[0], rename[1]) : name;
  const shape = expected.get(target);
  return shape && rename?.[2] ? [...shape].reverse() : shape;
}

/**
 * Checks a safetensors header against the config before any tensor data is read, so that what is
 * read is bounded by what the config allows: an unknown name, a wrong shape, or a buffer (the
 * causal masks) larger than the context's square is refused by name.
 */
export function checkHeader(tensors: readonly TensorHeader[], config: GPT2Config, file: string): void {
  const expected = expectedShapes(config);
  const problems: string[] = [];
  for (const { name, shape } of tensors) {
    const want = expectedRawShape(name, config, expected);
    if (want === undefined) problems.push(`unexpected tensor ${name} ${show(shape)}`);
    else if (want === 'buffer') {
      if (shape.reduce((a, b) => a * b, 1) > config.n_positions ** 2) problems.push(`${name} ${show(shape)} is larger than a causal mask of the context`);
    } else if (show(shape) !== show(want)) problems.push(`${name} has shape ${show(shape)}, expected ${show(want)}`);
  }
  if (problems.length > 0) throw new WeightsError(`${file}: does not match ${CONFIG_FILE} (nothing was read):\n  ${problems.slice(0, 20).join('\n  ')}`);
}

/** A raw state dict (as read from a file) under the canonical names, checked against the config. */
export function checkedWeights(raw: ReadonlyMap<string, HostTensor>, config: GPT2Config, file: string): { weights: StateDict; nonFinite: { name: string; count: number }[] } {
  const weights = normalizeStateDict(raw, config, file);
  checkStateDict(weights, config, file);
  return { weights, nonFinite: nonFiniteTensors(weights) };
}

/**
 * The tensors to write, named the way transformers loads them into GPT2LMHeadModel. Tied: the base
 * model's names alone, as openai-community/gpt2 ships them. Untied: the base names under
 * `transformer.` beside `lm_head.weight`, as save_pretrained writes them — without the prefix,
 * transformers would load the file into the base model and drop the head.
 */
export function weightsToSave(config: GPT2Config, weights: ReadonlyMap<string, TensorIn>, file: string): Map<string, TensorIn> {
  checkStateDict(weights, config, file);
  const prefix = isTied(config) ? '' : 'transformer.';
  return new Map([...weights].map(([name, t]) => [name === 'lm_head.weight' ? name : prefix + name, t]));
}
