/**
 * The model shapes the benchmarks take with `--shapes` (random weights, GPT-2's init and vocabulary):
 * `default`, d 256, 4 layers, 4 heads, small enough for minutes on lavapipe, and GPT-2's own presets.
 */
import { PRESETS, type GPT2Config } from '../src/gpt/config.js';

export const BENCH_SHAPES: Record<string, GPT2Config> = {
  default: { n_embd: 256, n_layer: 4, n_head: 4, n_positions: 1024, vocab_size: 50257, layer_norm_epsilon: 1e-5 },
  gpt2: PRESETS.gpt2,
  'gpt2-medium': PRESETS['gpt2-medium'],
  'gpt2-large': PRESETS['gpt2-large'],
  'gpt2-xl': PRESETS['gpt2-xl'],
};

/** The shapes a `--shapes` value names, or an error listing the ones there are. */
export function benchShapes(name: string): GPT2Config {
  if (!Object.hasOwn(BENCH_SHAPES, name)) throw new Error(`--shapes must be one of ${Object.keys(BENCH_SHAPES).join(', ')}, got ${name}`);
  return BENCH_SHAPES[name];
}
