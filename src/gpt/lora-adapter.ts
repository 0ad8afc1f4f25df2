/**
 * LoRA adapters in Hugging Face PEFT's layout: `adapter_config.json` (the LoRA settings and the base
 * model's name) and `adapter_model.safetensors` (F32 tensors named
 * `base_model.model.transformer.h.N.attn.c_attn.lora_A.weight` [r, in] and `…lora_B.weight` [out, r];
 * the head's `base_model.model.lm_head.lora_A.weight` [r, n_embd] and `…lora_B.weight` [vocab, r]),
 * which PEFT's `PeftModel.from_pretrained` loads onto transformers' GPT-2 unchanged.
 *
 * This module works on host tensors and JSON text: the config written and checked, the tensors
 * named, and an adapter checked against the base it is read onto, with each difference named.
 * Files in folders: src/node/adapter-folder.ts; the adapter layers themselves: src/gpt/lora.ts.
 */
import { tensor } from '../tensor/create.js';
import { halfDTypeOf } from '../tensor/half.js';
import type { GPT2Config } from './config.js';
import { BLOCK_LORA_TARGETS, LORA_TARGETS, loraParameters, loraSettings, type BlockLoRATarget, type LoRASettings, type LoRATarget } from './lora.js';
import type { GPT2 } from './model.js';
import { WeightsError, type HostTensor, type TensorHeader } from './safetensors.js';
import type { TensorIn } from './state-dict.js';

export const ADAPTER_CONFIG_FILE = 'adapter_config.json';
export const ADAPTER_WEIGHTS_FILE = 'adapter_model.safetensors';

/** The largest adapter_config.json read (a real one is under a kilobyte). */
export const MAX_ADAPTER_CONFIG_BYTES = 1 << 20;

/** PEFT's names for GPT2LMHeadModel's modules: ours under `transformer.` (the blocks), the head's beside it. */
const PEFT_MODEL = 'base_model.model.';
const HEAD = 'lm_head.';
const peftName = (name: string): string => `${PEFT_MODEL}${name.startsWith(HEAD) ? '' : 'transformer.'}${name}`;

/**
 * The layers an adapter may sit on, in the order a block holds them, with where each lives in a
 * block and its [in, out] features as multiples of n_embd. PEFT matches a target_modules entry
 * against the end of a module's name, so `attn.c_proj` and `mlp.c_proj` tell GPT-2's two c_proj apart.
 */
const TARGET_LAYERS: Record<BlockLoRATarget, { module: string; in: number; out: number }> = {
  c_attn: { module: 'attn.c_attn', in: 1, out: 3 },
  'attn.c_proj': { module: 'attn.c_proj', in: 1, out: 1 },
  c_fc: { module: 'mlp.c_fc', in: 1, out: 4 },
  'mlp.c_proj': { module: 'mlp.c_proj', in: 4, out: 1 },
};

/** What an adapter is, besides its tensors: PEFT's r, lora_alpha, lora_dropout and target_modules. */
export type AdapterSettings = LoRASettings;

/** An adapter_config.json, read: the settings and the base it was trained on (null where the file names none). */
export interface AdapterConfig extends AdapterSettings {
  base: string | null;
}

export function isLoRATarget(name: string): name is LoRATarget {
  return (LORA_TARGETS as readonly string[]).includes(name);
}

/** The targets in a model's order (a block's, then the head), each once: how they are written and compared. */
const ordered = (targets: readonly LoRATarget[]): LoRATarget[] => LORA_TARGETS.filter((t) => targets.includes(t));

/**
 * The adapter_config.json text PEFT writes for these settings (GPT-2's Conv1D layers: fan_in_fan_out;
 * for lm_head, an nn.Linear, PEFT warns and uses false there: the shapes are the same either way).
 */
export function adapterConfigText(settings: AdapterSettings, base: string): string {
  const config = {
    peft_type: 'LORA',
    task_type: 'CAUSAL_LM',
    base_model_name_or_path: base,
    r: settings.rank,
    lora_alpha: settings.alpha,
    lora_dropout: settings.dropout,
    target_modules: ordered(settings.targets),
    fan_in_fan_out: true,
    bias: 'none',
    modules_to_save: null,
    layers_to_transform: null,
    init_lora_weights: true,
    use_rslora: false,
    use_dora: false,
    rank_pattern: {},
    alpha_pattern: {},
    inference_mode: true,
  };
  return `${JSON.stringify(config, null, 2)}\n`;
}

/**
 * An adapter_config.json's text, checked: a PEFT LoRA adapter of GPT-2's layers with one rank and
 * scale for every layer. Whatever would change what the adapter computes and is not read here (DoRA,
 * rsLoRA, per-layer ranks, trained biases, extra modules) is refused by name rather than ignored.
 */
export function parseAdapterConfig(text: string, file: string): AdapterConfig {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new WeightsError(`${file}: not valid JSON (${(e as Error).message})`);
  }
  const fail = (message: string): never => {
    throw new WeightsError(`${file}: ${message}`);
  };
  if (typeof json !== 'object' || json === null || Array.isArray(json)) return fail('expected a JSON object');
  const c = json as Record<string, unknown>;
  const shown = (key: string) => JSON.stringify(c[key]);
  if (!Object.hasOwn(c, 'peft_type')) fail('"peft_type" is missing (a PEFT LoRA adapter has "peft_type": "LORA")');
  if (c.peft_type !== 'LORA') fail(`"peft_type" is ${shown('peft_type')}: only LoRA adapters ("LORA") are read`);
  if (c.task_type !== undefined && c.task_type !== null && c.task_type !== 'CAUSAL_LM') fail(`"task_type" is ${shown('task_type')}, expected "CAUSAL_LM"`);
  for (const key of ['r', 'lora_alpha', 'target_modules']) if (!Object.hasOwn(c, key)) fail(`"${key}" is missing`);
  const rank = c.r;
  if (!(typeof rank === 'number' && Number.isSafeInteger(rank) && rank > 0)) return fail(`"r" must be a positive integer, got ${shown('r')}`);
  const alpha = c.lora_alpha;
  if (!(typeof alpha === 'number' && Number.isFinite(alpha) && alpha > 0)) return fail(`"lora_alpha" must be a positive number, got ${shown('lora_alpha')}`);
  const dropout = c.lora_dropout ?? 0;
  if (!(typeof dropout === 'number' && dropout >= 0 && dropout < 1)) return fail(`"lora_dropout" must be a number in [0, 1), got ${shown('lora_dropout')}`);
  const modules = c.target_modules;
  if (typeof modules === 'string') fail(`"target_modules" is the pattern ${shown('target_modules')}: only a list of module names is read`);
  if (!Array.isArray(modules) || modules.length === 0 || !modules.every((m) => typeof m === 'string')) {
    return fail(`"target_modules" must be a non-empty list of module names, got ${shown('target_modules')}`);
  }
  const targets = new Set<LoRATarget>();
  for (const name of modules) {
    // PEFT matches a name against the end of each module's: a bare c_proj adapts both of GPT-2's.
    if (name === 'c_proj') (['attn.c_proj', 'mlp.c_proj'] as const).forEach((t) => targets.add(t));
    else if (isLoRATarget(name)) targets.add(name);
    else fail(`"target_modules" names "${name}", which is not an adaptable GPT-2 layer (${LORA_TARGETS.join(', ')}, or c_proj for both)`);
  }
  if (c.bias !== undefined && c.bias !== 'none') fail(`"bias" is ${shown('bias')}: only adapters that train no biases ("none") are read`);
  if (c.fan_in_fan_out !== undefined && typeof c.fan_in_fan_out !== 'boolean') fail(`"fan_in_fan_out" must be true or false, got ${shown('fan_in_fan_out')}`);
  for (const key of ['use_dora', 'use_rslora']) if (c[key] !== undefined && c[key] !== false) fail(`"${key}" is ${shown(key)}: not supported (only plain LoRA)`);
  for (const key of ['rank_pattern', 'alpha_pattern']) {
    const v = c[key];
    if (v !== undefined && v !== null && !(typeof v === 'object' && !Array.isArray(v) && Object.keys(v).length === 0)) {
      fail(`"${key}" is ${shown(key)}: one rank and alpha for every layer is all that is read`);
    }
  }
  for (const key of ['layers_to_transform', 'modules_to_save']) {
    const v = c[key];
    if (v !== undefined && v !== null && !(Array.isArray(v) && v.length === 0)) fail(`"${key}" is ${shown(key)}: not supported (the adapter must cover every block and only the LoRA layers)`);
  }
  const base = c.base_model_name_or_path ?? null;
  if (base !== null && (typeof base !== 'string' || base === '')) return fail(`"base_model_name_or_path" must be a model name or path, got ${shown('base_model_name_or_path')}`);
  return { rank, alpha, dropout, targets: ordered([...targets]), base };
}

/** Every adapter tensor of a base with `config` under `settings`, our names (PEFT's less its prefix), in a model's order. */
export function adapterShapes(config: GPT2Config, settings: Pick<AdapterSettings, 'rank' | 'targets'>): Map<string, number[]> {
  const C = config.n_embd;
  const r = settings.rank;
  const shapes = new Map<string, number[]>();
  for (let i = 0; i < config.n_layer; i++) {
    for (const target of ordered(settings.targets)) {
      if (target === 'lm_head') continue;
      const { module, in: inC, out: outC } = TARGET_LAYERS[target];
      shapes.set(`h.${i}.${module}.lora_A.weight`, [r, inC * C]);
      shapes.set(`h.${i}.${module}.lora_B.weight`, [outC * C, r]);
    }
  }
  if (settings.targets.includes('lm_head')) {
    shapes.set(`${HEAD}lora_A.weight`, [r, C]);
    shapes.set(`${HEAD}lora_B.weight`, [config.vocab_size, r]);
  }
  return shapes;
}

const show = (shape: readonly number[]): string => `[${shape.join(', ')}]`;

const ADAPTER_NAME = /^h\.(\d+)\.(attn\.c_attn|attn\.c_proj|mlp\.c_fc|mlp\.c_proj)\.lora_([AB])\.weight$/;
const HEAD_NAME = /^lm_head\.lora_([AB])\.weight$/;
const targetOfModule = (module: string): BlockLoRATarget => BLOCK_LORA_TARGETS.find((t) => TARGET_LAYERS[t].module === module)!;

/**
 * What the tensors say about the base they were made for: n_embd (from a lora_A's in features),
 * the vocabulary (from the head's lora_B), the blocks they cover, the layers they adapt and their rank.
 */
function describeTensors(tensors: readonly TensorHeader[]): { nEmbd: number | null; vocab: number | null; layers: number; targets: Set<LoRATarget>; ranks: Set<number> } {
  let nEmbd: number | null = null;
  let vocab: number | null = null;
  let layers = 0;
  const targets = new Set<LoRATarget>();
  const ranks = new Set<number>();
  for (const { name, shape } of tensors) {
    const head = HEAD_NAME.exec(name);
    if (head !== null && shape.length === 2) {
      targets.add('lm_head');
      ranks.add(head[1] === 'A' ? shape[0] : shape[1]);
      if (head[1] === 'A') nEmbd ??= shape[1];
      else vocab = shape[0];
      continue;
    }
    const match = ADAPTER_NAME.exec(name);
    if (match === null || shape.length !== 2) continue;
    const [, layer, module, kind] = match;
    const target = targetOfModule(module);
    layers = Math.max(layers, Number(layer) + 1);
    targets.add(target);
    ranks.add(kind === 'A' ? shape[0] : shape[1]);
    if (kind === 'A' && nEmbd === null && shape[1] % TARGET_LAYERS[target].in === 0) nEmbd = shape[1] / TARGET_LAYERS[target].in;
  }
  return { nEmbd, vocab, layers, targets, ranks };
}

/**
 * Checks an adapter's tensors (our names) against the base config and the adapter's settings, before
 * any tensor data is read: a base of another size, another rank or other layers is named as such,
 * then each tensor that is missing, misshapen or unexpected.
 */
export function checkAdapterTensors(tensors: readonly TensorHeader[], config: GPT2Config, settings: AdapterSettings, file: string): void {
  const expected = adapterShapes(config, settings);
  const found = describeTensors(tensors);
  const differences: string[] = [];
  if (found.nEmbd !== null && found.nEmbd !== config.n_embd) differences.push(`it was made for a base with n_embd ${found.nEmbd}, this base has n_embd ${config.n_embd}`);
  if (found.vocab !== null && found.vocab !== config.vocab_size) differences.push(`its lm_head adapter was made for a vocabulary of ${found.vocab}, this base has vocab_size ${config.vocab_size}`);
  if (found.layers !== config.n_layer && found.layers > 0) differences.push(`it adapts ${found.layers} blocks, this base has ${config.n_layer} (n_layer)`);
  const ranks = [...found.ranks].filter((r) => r !== settings.rank);
  if (ranks.length > 0) differences.push(`its tensors have rank ${ranks.join(', ')}, its config says r ${settings.rank}`);
  const extra = ordered([...found.targets].filter((t) => !settings.targets.includes(t)));
  if (extra.length > 0) differences.push(`it holds tensors for ${extra.join(', ')}, which target_modules does not list`);
  const absent = settings.targets.filter((t) => !found.targets.has(t));
  if (absent.length > 0) differences.push(`target_modules lists ${absent.join(', ')}, but it holds no tensors for ${absent.length === 1 ? 'it' : 'them'}`);
  const problems: string[] = [];
  const names = new Set(tensors.map((t) => t.name));
  for (const { name, shape } of tensors) {
    const want = expected.get(name);
    if (want === undefined) problems.push(`unexpected tensor ${peftName(name)} ${show(shape)}`);
    else if (show(shape) !== show(want)) problems.push(`${peftName(name)} has shape ${show(shape)}, expected ${show(want)}`);
  }
  for (const [name, shape] of expected) if (!names.has(name)) problems.push(`missing ${peftName(name)} ${show(shape)}`);
  if (differences.length === 0 && problems.length === 0) return;
  const vocab = settings.targets.includes('lm_head') ? `, vocab_size ${config.vocab_size}` : '';
  const base = `n_embd ${config.n_embd}, n_layer ${config.n_layer}${vocab}; r ${settings.rank}, targets ${ordered(settings.targets).join(', ')}`;
  const listed = [...differences, ...problems.slice(0, 20), ...(problems.length > 20 ? [`… and ${problems.length - 20} more`] : [])];
  throw new WeightsError(`${file}: does not fit the base (${base}):\n  ${listed.join('\n  ')}`);
}

/** A raw adapter file's tensor names → ours: PEFT's prefix is required, and removed. */
export function fromPeftNames<T extends TensorHeader | [string, HostTensor]>(items: readonly T[], file: string): T[] {
  return items.map((item) => {
    const name = Array.isArray(item) ? item[0] : item.name;
    const ours = name.replace(/^base_model\.model\.(transformer\.)?/, '');
    if (ours === name || peftName(ours) !== name) {
      throw new WeightsError(`${file}: tensor "${name}" is not a PEFT adapter tensor of GPT-2 (names start with ${PEFT_MODEL}transformer. or ${PEFT_MODEL}${HEAD})`);
    }
    return (Array.isArray(item) ? [ours, item[1]] : { ...item, name: ours }) as T;
  });
}

/**
 * The adapter's tensors to write, under PEFT's names in a model's order, F32 (a 16-bit value is
 * widened by the caller: PEFT keeps adapters in f32). Checked against the base config first.
 */
export function adapterTensorsToSave(config: GPT2Config, settings: AdapterSettings, tensors: ReadonlyMap<string, TensorIn>, file: string): Map<string, TensorIn> {
  checkAdapterTensors([...tensors].map(([name, t]) => ({ name, shape: t.shape })), config, settings, file);
  const out = new Map<string, TensorIn>();
  for (const name of adapterShapes(config, settings).keys()) {
    const t = tensors.get(name)!;
    if (t.data instanceof Uint16Array) throw new WeightsError(`${file}: ${name} is ${halfDTypeOf(t.data)}; adapters are written in f32`);
    out.set(peftName(name), t);
  }
  return out;
}

/**
 * How an adapter's settings differ from those of the adapters attached to a model (what a forward
 * with it would compute), one phrase each; empty when they agree. Dropout only acts in training
 * and is not compared.
 */
export function settingsDifferences(adapter: AdapterSettings, attached: AdapterSettings): string[] {
  const out: string[] = [];
  if (adapter.rank !== attached.rank) out.push(`r ${adapter.rank} against the model's ${attached.rank}`);
  if (adapter.alpha !== attached.alpha) out.push(`lora_alpha ${adapter.alpha} against the model's ${attached.alpha}`);
  const [a, b] = [ordered(adapter.targets).join(', '), ordered(attached.targets).join(', ')];
  if (a !== b) out.push(`target_modules ${a} against the model's ${b}`);
  return out;
}

/** The adapter tensors of a model, read back from the device as f32, under our names. */
export async function adapterWeights(model: GPT2): Promise<Map<string, HostTensor>> {
  const out = new Map<string, HostTensor>();
  for (const [name, p] of loraParameters(model)) out.set(name, { shape: [...p.shape], data: await p.toFloat32() });
  return out;
}

/**
 * Puts an adapter's tensors (our names) into the adapters attached to `model`, on its backend. The
 * adapter must be what is attached (rank, alpha, targets) and fit the model's size; otherwise
 * nothing is loaded and the error names what differs.
 */
export function loadAdapterWeights(model: GPT2, settings: AdapterSettings, tensors: ReadonlyMap<string, HostTensor>, source: string): void {
  const attached = loraSettings(model);
  if (attached === null) throw new WeightsError(`${source}: the model has no adapters to load it into`);
  const differences = settingsDifferences(settings, attached);
  if (differences.length > 0) throw new WeightsError(`${source}: does not fit the model's adapters: ${differences.join('; ')}`);
  checkAdapterTensors([...tensors].map(([name, t]) => ({ name, shape: t.shape })), model.config, settings, source);
  for (const [name, p] of loraParameters(model)) {
    model.replaceParameter(name, tensor(tensors.get(name)!.data, p.shape, { backend: p.backend }));
  }
}
