/**
 * GPT-2 hyper-parameters under the key names of Hugging Face's `config.json`, the presets, and the
 * conversion from and to that file (what we write loads in transformers' GPT2LMHeadModel unchanged).
 */
export interface GPT2Config {
  n_embd: number;
  n_layer: number;
  n_head: number;
  /** Context length: rows of the position embedding. */
  n_positions: number;
  vocab_size: number;
  layer_norm_epsilon: number;
  /** false: the output head is a matrix of its own (`lm_head.weight`) instead of `wte`. Default true. */
  tie_word_embeddings?: boolean;
}

const GPT2_VOCAB = 50257;
const END_OF_TEXT = 50256;
const HF_DEFAULT_EPS = 1e-5;

function preset(n_embd: number, n_layer: number, n_head: number, n_positions = 1024): GPT2Config {
  return { n_embd, n_layer, n_head, n_positions, vocab_size: GPT2_VOCAB, layer_norm_epsilon: HF_DEFAULT_EPS };
}

export const PRESETS = {
  gpt2: preset(768, 12, 12),
  'gpt2-medium': preset(1024, 24, 16),
  'gpt2-large': preset(1280, 36, 20),
  'gpt2-xl': preset(1600, 48, 25),
  /** For tests: small enough for the CPU backend, with the real tokenizer's vocabulary. */
  tiny: preset(32, 2, 2, 64),
  /** For the demo: trains from scratch in minutes. */
  demo: preset(64, 2, 2, 256),
} as const satisfies Record<string, GPT2Config>;

export type PresetName = keyof typeof PRESETS;

export function isPresetName(name: string): name is PresetName {
  return Object.hasOwn(PRESETS, name);
}

/** Presets without published weights (random init); the others are PRESET_PUBLISHER's hub repos. */
export const RANDOM_PRESETS = ['tiny', 'demo'] as const satisfies readonly PresetName[];
export type RandomPreset = (typeof RANDOM_PRESETS)[number];
export const isRandomPreset = (name: string): name is RandomPreset => (RANDOM_PRESETS as readonly string[]).includes(name);
export const PRESET_PUBLISHER = 'openai-community';

const REPO_ID = /^[\w.-]+\/[\w.-]+$/;

/**
 * The Hugging Face hub repo a model name stands for: `gpt2` … `gpt2-xl` are PRESET_PUBLISHER's,
 * `owner/name` is itself; null for the random presets and anything else.
 */
export function hubRepoOf(name: string): string | null {
  if (isRandomPreset(name)) return null;
  if (isPresetName(name)) return `${PRESET_PUBLISHER}/${name}`;
  return REPO_ID.test(name) ? name : null;
}

export function isTied(config: GPT2Config): boolean {
  return config.tie_word_embeddings ?? true;
}

/** Activations that are GPT-2's GELU with the tanh approximation, the only one our model computes. */
const TANH_GELU = ['gelu_new', 'gelu_pytorch_tanh'];

function fail(source: string, message: string): never {
  throw new Error(`${source}: ${message}`);
}

/**
 * Bounds far above any GPT-2 (XL: n_embd 1600, 48 layers, 1024 positions): past them a config is a
 * mistake, refused before anything the size of the model is allocated.
 */
const SIZE_LIMITS = { n_embd: 1 << 16, n_layer: 1 << 10, n_head: 1 << 10, n_positions: 1 << 20, vocab_size: 1 << 24 } as const;

function positiveInteger(obj: Record<string, unknown>, key: keyof typeof SIZE_LIMITS, source: string): number {
  const value = obj[key];
  if (value === undefined) fail(source, `missing required key "${key}"`);
  if (typeof value !== 'number' || !Number.isInteger(value) || value <= 0) {
    fail(source, `"${key}" must be a positive integer, got ${JSON.stringify(value)}`);
  }
  if (value > SIZE_LIMITS[key]) fail(source, `"${key}" is ${value}, more than any GPT-2 could use (at most ${SIZE_LIMITS[key]})`);
  return value;
}

/** Reads the GPT-2 fields of a parsed config.json; `source` (the file) prefixes every error. */
export function configFromJson(obj: unknown, source: string): GPT2Config {
  if (typeof obj !== 'object' || obj === null || Array.isArray(obj)) fail(source, 'expected a JSON object');
  const json = obj as Record<string, unknown>;
  if (json.model_type !== undefined && json.model_type !== 'gpt2') {
    fail(source, `model_type is ${JSON.stringify(json.model_type)}, only "gpt2" models are supported`);
  }
  const activation = json.activation_function;
  if (activation !== undefined && !TANH_GELU.includes(activation as string)) {
    fail(source, `activation_function ${JSON.stringify(activation)} is not supported (expected one of ${TANH_GELU.join(', ')})`);
  }
  const config: GPT2Config = {
    n_embd: positiveInteger(json, 'n_embd', source),
    n_layer: positiveInteger(json, 'n_layer', source),
    n_head: positiveInteger(json, 'n_head', source),
    n_positions: positiveInteger(json, 'n_positions', source),
    vocab_size: positiveInteger(json, 'vocab_size', source),
    layer_norm_epsilon: HF_DEFAULT_EPS,
  };
  if (config.n_embd % config.n_head !== 0) {
    fail(source, `n_embd (${config.n_embd}) must be divisible by n_head (${config.n_head})`);
  }
  const eps = json.layer_norm_epsilon;
  if (eps !== undefined) {
    if (typeof eps !== 'number' || !(eps > 0)) fail(source, `"layer_norm_epsilon" must be a positive number, got ${JSON.stringify(eps)}`);
    config.layer_norm_epsilon = eps;
  }
  const tie = json.tie_word_embeddings;
  if (tie !== undefined) {
    if (typeof tie !== 'boolean') fail(source, `"tie_word_embeddings" must be true or false, got ${JSON.stringify(tie)}`);
    config.tie_word_embeddings = tie;
  }
  return config;
}

/** A transformers config.json is a few kilobytes. */
export const MAX_CONFIG_BYTES = 1 << 20;

/** Reads a config.json's text (too large or not JSON is an error naming `source`). */
export function configFromText(text: string, source: string): GPT2Config {
  if (text.length > MAX_CONFIG_BYTES) fail(source, `${text.length} characters is no config (at most ${MAX_CONFIG_BYTES} bytes)`);
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    fail(source, `not valid JSON (${(e as Error).message})`);
  }
  return configFromJson(json, source);
}

/** The config.json text a saved model carries. */
export const configToText = (config: GPT2Config): string => JSON.stringify(configToJson(config), null, 2) + '\n';

/** A complete Hugging Face GPT-2 config.json object (dropouts 0: they only matter for training there). */
export function configToJson(config: GPT2Config): Record<string, unknown> {
  return {
    architectures: ['GPT2LMHeadModel'],
    model_type: 'gpt2',
    activation_function: 'gelu_new',
    attn_pdrop: 0.0,
    embd_pdrop: 0.0,
    resid_pdrop: 0.0,
    bos_token_id: END_OF_TEXT,
    eos_token_id: END_OF_TEXT,
    initializer_range: 0.02,
    layer_norm_epsilon: config.layer_norm_epsilon,
    n_ctx: config.n_positions,
    n_embd: config.n_embd,
    n_head: config.n_head,
    n_inner: null,
    n_layer: config.n_layer,
    n_positions: config.n_positions,
    reorder_and_upcast_attn: false,
    scale_attn_by_inverse_layer_idx: false,
    scale_attn_weights: true,
    tie_word_embeddings: isTied(config),
    torch_dtype: 'float32',
    use_cache: true,
    vocab_size: config.vocab_size,
  };
}
