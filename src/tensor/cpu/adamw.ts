/**
 * CPU reference for one AdamW step, in place, with torch.optim.AdamW's semantics (its single-tensor
 * path): decoupled weight decay first, then Adam with bias correction. The WGSL twin is
 * src/kernels/adamw.ts. Each element is computed in float64 from the f32 state and rounded once
 * per stored value, as PyTorch stores f32 state.
 *
 *   p ← p · (1 − lr·wd)
 *   m ← β1·m + (1 − β1)·g
 *   v ← β2·v + (1 − β2)·g²
 *   p ← p − lr · m̂ / (√v̂ + eps),  m̂ = m / (1 − β1^t), v̂ = v / (1 − β2^t)
 */
import type { AdamWHyper, Storage } from '../backend.js';
import { f32 } from './storage.js';

/** The host-side constants both backends use. */
export function adamwConstants({ lr, beta1, beta2, weightDecay, step }: AdamWHyper): { decay: number; biasCorrection1: number; biasCorrection2: number } {
  if (!Number.isInteger(step) || step < 1) throw new Error(`adamw: step must be a positive integer (1 for the first update), got ${step}`);
  return { decay: 1 - lr * weightDecay, biasCorrection1: 1 - beta1 ** step, biasCorrection2: 1 - beta2 ** step };
}

/** `gradScale` multiplies each gradient first, rounded to f32 as the clipped gradient would be stored. */
export function adamwUpdate(
  p: Float32Array | Float64Array, g: ArrayLike<number>, m: Float32Array | Float64Array, v: Float32Array | Float64Array, hyper: AdamWHyper,
  gradScale = 1,
): void {
  const { lr, beta1, beta2, eps } = hyper;
  const { decay, biasCorrection1, biasCorrection2 } = adamwConstants(hyper);
  for (let i = 0; i < p.length; i++) {
    const gi = gradScale === 1 ? g[i] : Math.fround(g[i] * gradScale);
    const mi = beta1 * m[i] + (1 - beta1) * gi;
    const vi = beta2 * v[i] + (1 - beta2) * gi * gi;
    m[i] = mi;
    v[i] = vi;
    const mHat = m[i] / biasCorrection1;
    const vHat = v[i] / biasCorrection2;
    p[i] = p[i] * decay - lr * mHat / (Math.sqrt(vHat) + eps);
  }
}

export function adamw(param: Storage, grad: Storage, m: Storage, v: Storage, hyper: AdamWHyper, gradScale: Storage | null): void {
  const p = f32(param);
  for (const [name, s] of [['grad', grad], ['m', m], ['v', v]] as const) {
    if (s.size !== p.length) throw new Error(`adamw: ${name} has ${s.size} elements, the parameter ${p.length}`);
  }
  if (gradScale !== null && gradScale.size !== 1) throw new Error(`adamw: the gradient scale has ${gradScale.size} elements, not 1`);
  adamwUpdate(p, f32(grad), f32(m), f32(v), hyper, gradScale === null ? 1 : f32(gradScale)[0]);
}
