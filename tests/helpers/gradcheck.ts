/**
 * Central-difference gradient checks for any Tensor function, in float64.
 *
 * The loss is L(x) = Σ f(x)·r for fixed random weights r, so every output element and every path
 * matters (a plain sum's gradient can hide errors that cancel). The analytic gradient is the
 * engine's: backward() on the backend under test (the f32 CPU reference by default, or WebGPU).
 * The numeric gradient evaluates the same Tensor function on `Float64Backend` below, a float64 twin
 * of the primitive ops (and matmul, and the fused ops' forwards through the CPU reference's float64
 * cores) written here from their definitions: central differences with
 * h = 1e-6·max(1, |x|) have truncation ~h²·|f'''| ≈ 1e-12 and rounding ~2^-53·|L|/h ≈ 1e-10, so the
 * numeric side is exact for our purpose and the check measures the analytic gradient's own error:
 * a few f32 roundings per rule (~1e-6 relative, measured below 1e-5 on every case of
 * tests/gradcheck.test.ts). Non-smooth ops (relu, abs, max, maximum, minimum) need inputs farther than
 * h from their kinks, which any draw of f32 test data has unless it puts ties there on purpose.
 *
 * Why a separate float64 backend rather than a float64 mode of the CPU reference: the reference's
 * storage is f32 by contract (CpuStorage, and every fused op in src/tensor/cpu reads it as f32),
 * and the primitive ops are small enough to restate; a twin written from the definitions is also an
 * independent oracle for the forward of the primitives.
 */
import type {
  AttentionShape, Backend, BinaryOp, DType, MatmulEpilogue, MatmulShape, RandomDistribution, ReduceOp, Storage, UnaryOp,
} from '../../src/tensor/backend.js';
import { backward } from '../../src/tensor/autograd.js';
import { fromStorage, tensor } from '../../src/tensor/create.js';
import { attendCausal } from '../../src/tensor/cpu/attention.js';
import { crossEntropyRows } from '../../src/tensor/cpu/cross-entropy.js';
import { geluAt } from '../../src/tensor/cpu/gelu.js';
import { layerNormRows } from '../../src/tensor/cpu/layernorm.js';
import { normalAt, uniformAt } from '../../src/tensor/cpu/random.js';
import { softmaxRows } from '../../src/tensor/cpu/softmax.js';
import { noGrad } from '../../src/tensor/graph.js';
import { mul, sum } from '../../src/tensor/ops.js';
import { tidy } from '../../src/tensor/scope.js';
import { broadcastStrides, sizeOf, stridesOf } from '../../src/tensor/shape.js';
import type { Tensor } from '../../src/tensor/tensor.js';
import { cpu } from './backends.js';
import { maxRelativeError } from './close.js';
import { randomArray } from './random-data.js';

class F64Storage implements Storage {
  constructor(readonly data: Float64Array | Int32Array) {}
  get dtype(): DType {
    return this.data instanceof Int32Array ? 'i32' : 'f32';
  }
  get size(): number {
    return this.data.length;
  }
}

const d64 = (s: Storage): Float64Array | Int32Array => (s as F64Storage).data;

/** Every output multi-index in row-major order, with each input's broadcast offset. */
function forEachIndex(outShape: readonly number[], inShapes: readonly (readonly number[])[], fn: (i: number, offsets: number[]) => void): void {
  const strides = inShapes.map((s) => broadcastStrides(s, outShape));
  const outStrides = stridesOf(outShape);
  const size = sizeOf(outShape);
  for (let i = 0; i < size; i++) {
    const offsets = strides.map((st) => st.reduce((acc, stride, d) => acc + (Math.floor(i / outStrides[d]) % outShape[d]) * stride, 0));
    fn(i, offsets);
  }
}

const UNARY: Record<UnaryOp, (x: number) => number> = {
  neg: (x) => -x, exp: Math.exp, log: Math.log, sqrt: Math.sqrt, tanh: Math.tanh, relu: (x) => Math.max(x, 0), abs: Math.abs,
};
const BINARY: Record<BinaryOp, (a: number, b: number) => number> = {
  add: (a, b) => a + b, sub: (a, b) => a - b, mul: (a, b) => a * b, div: (a, b) => a / b,
  max: (a, b) => (a >= b ? a : b), min: (a, b) => (a <= b ? a : b), pow: Math.pow,
  gt: (a, b) => (a > b ? 1 : 0), eq: (a, b) => (a === b ? 1 : 0),
};

const unsupported = (op: string) => (): never => {
  throw new Error(`${op} has no float64 twin in tests/helpers/gradcheck.ts`);
};

/**
 * The primitive ops, matmul and the fused ops' forwards in float64 (i32 data stays i32). Storage is
 * never released: it is garbage-collected.
 */
export class Float64Backend implements Backend {
  readonly name = 'cpu';
  readonly description = 'CPU float64 (gradient checks)';

  upload(data: Float32Array | Int32Array): Storage {
    return new F64Storage(data instanceof Int32Array ? data.slice() : Float64Array.from(data));
  }
  /** Rounded to f32, as the interface says; read64 gives the float64 values. */
  read(x: Storage): Promise<Float32Array | Int32Array> {
    const data = d64(x);
    return Promise.resolve(data instanceof Int32Array ? data.slice() : Float32Array.from(data));
  }
  read64(x: Storage): Float64Array {
    return Float64Array.from(d64(x));
  }
  release(): void {}
  flush(): void {}
  async sync(): Promise<void> {}
  releaseCached(): void {}
  readonly maxStorageSize = 2 ** 32 - 1;
  readonly viewAlignment = 1;
  view = unsupported('view');
  copy = unsupported('copy');

  fill(size: number, value: number, dtype: DType): Storage {
    return new F64Storage(dtype === 'i32' ? new Int32Array(size).fill(value) : new Float64Array(size).fill(value));
  }
  random(size: number, seed: number, distribution: RandomDistribution): Storage {
    const draw = distribution === 'uniform' ? uniformAt : normalAt;
    return new F64Storage(Float64Array.from({ length: size }, (_, i) => draw(seed, i)));
  }
  cast(x: Storage, dtype: DType): Storage {
    return new F64Storage(dtype === 'i32' ? Int32Array.from(d64(x), Math.trunc) : Float64Array.from(d64(x)));
  }
  unary(op: UnaryOp, x: Storage): Storage {
    return new F64Storage(Float64Array.from(d64(x), UNARY[op]));
  }
  binary(op: BinaryOp, a: Storage, aShape: readonly number[], b: Storage, bShape: readonly number[], outShape: readonly number[]): Storage {
    const [av, bv] = [d64(a), d64(b)];
    const out = new Float64Array(sizeOf(outShape));
    forEachIndex(outShape, [aShape, bShape], (i, [ia, ib]) => (out[i] = BINARY[op](av[ia], bv[ib])));
    return new F64Storage(out);
  }
  where(
    cond: Storage, condShape: readonly number[], a: Storage, aShape: readonly number[], b: Storage, bShape: readonly number[], outShape: readonly number[],
  ): Storage {
    const [cv, av, bv] = [d64(cond), d64(a), d64(b)];
    const out = new Float64Array(sizeOf(outShape));
    forEachIndex(outShape, [condShape, aShape, bShape], (i, [ic, ia, ib]) => (out[i] = cv[ic] !== 0 ? av[ia] : bv[ib]));
    return new F64Storage(out);
  }
  reduce(op: ReduceOp, x: Storage, shape: readonly number[], axis: number): Storage {
    const xv = d64(x);
    const outShape = shape.map((d, i) => (i === axis ? 1 : d));
    const out = new Float64Array(sizeOf(outShape)).fill(op === 'sum' ? 0 : -Infinity);
    const outStrides = stridesOf(outShape);
    const inStrides = stridesOf(shape);
    for (let i = 0; i < xv.length; i++) {
      let o = 0;
      for (let d = 0; d < shape.length; d++) if (d !== axis) o += (Math.floor(i / inStrides[d]) % shape[d]) * outStrides[d];
      out[o] = op === 'sum' ? out[o] + xv[i] : Math.max(out[o], xv[i]);
    }
    return new F64Storage(out);
  }
  permute(x: Storage, shape: readonly number[], perm: readonly number[]): Storage {
    const xv = d64(x);
    const outShape = perm.map((p) => shape[p]);
    const out = this.like(xv, xv.length);
    const inStrides = stridesOf(shape);
    const outStrides = stridesOf(outShape);
    for (let o = 0; o < xv.length; o++) {
      let i = 0;
      for (let k = 0; k < perm.length; k++) i += (Math.floor(o / outStrides[k]) % outShape[k]) * inStrides[perm[k]];
      out[o] = xv[i];
    }
    return new F64Storage(out);
  }
  slice(x: Storage, shape: readonly number[], begin: readonly number[], size: readonly number[]): Storage {
    const xv = d64(x);
    const out = this.like(xv, sizeOf(size));
    const inStrides = stridesOf(shape);
    const outStrides = stridesOf(size);
    for (let o = 0; o < out.length; o++) {
      let i = 0;
      for (let d = 0; d < size.length; d++) i += (begin[d] + (Math.floor(o / outStrides[d]) % size[d])) * inStrides[d];
      out[o] = xv[i];
    }
    return new F64Storage(out);
  }
  pad(x: Storage, shape: readonly number[], begin: readonly number[], outShape: readonly number[]): Storage {
    const xv = d64(x);
    const out = this.like(xv, sizeOf(outShape));
    const inStrides = stridesOf(shape);
    const outStrides = stridesOf(outShape);
    for (let i = 0; i < xv.length; i++) {
      let o = 0;
      for (let d = 0; d < shape.length; d++) o += (begin[d] + (Math.floor(i / inStrides[d]) % shape[d])) * outStrides[d];
      out[o] = xv[i];
    }
    return new F64Storage(out);
  }
  matmul(a: Storage, b: Storage, bias: Storage | null, s: MatmulShape, epilogue: MatmulEpilogue = {}): Storage {
    const [av, bv] = [d64(a), d64(b)];
    const residual = epilogue.residual ? d64(epilogue.residual) : null;
    const biasv = bias === null ? null : d64(bias);
    const out = new Float64Array(s.batch * s.m * s.n);
    for (let p = 0; p < s.batch; p++) {
      for (let i = 0; i < s.m; i++) {
        for (let j = 0; j < s.n; j++) {
          let acc = biasv === null ? 0 : biasv[j];
          // A[i, kk] and B[kk, j] of this batch, stepping along K.
          let ai = p * s.m * s.k + (s.transA ? i : i * s.k);
          let bi = (s.broadcastB ? 0 : p * s.k * s.n) + (s.transB ? j * s.k : j);
          const [aStep, bStep] = [s.transA ? s.m : 1, s.transB ? 1 : s.n];
          for (let kk = 0; kk < s.k; kk++, ai += aStep, bi += bStep) acc += av[ai] * bv[bi];
          const at = (p * s.m + i) * s.n + j;
          out[at] = (epilogue.gelu ? geluAt(acc) : acc) + (residual === null ? 0 : residual[at]);
        }
      }
    }
    return new F64Storage(out);
  }

  // The fused ops' forwards, for whole-model differences: the CPU reference's cores run in float64.
  layerNorm(x: Storage, weight: Storage, bias: Storage, rows: number, dim: number, eps: number): { y: Storage; mean: Storage; rstd: Storage } {
    const [y, mean, rstd] = [new Float64Array(rows * dim), new Float64Array(rows), new Float64Array(rows)];
    layerNormRows(d64(x), d64(weight), d64(bias), rows, dim, eps, y, mean, rstd);
    return { y: new F64Storage(y), mean: new F64Storage(mean), rstd: new F64Storage(rstd) };
  }
  gelu(x: Storage): Storage {
    return new F64Storage(Float64Array.from(d64(x), geluAt));
  }
  softmax(x: Storage, rows: number, dim: number): Storage {
    const y = new Float64Array(rows * dim);
    softmaxRows(d64(x), rows, dim, y);
    return new F64Storage(y);
  }
  attention(q: Storage, k: Storage, v: Storage, { B, H, T, hs }: AttentionShape): { out: Storage; logSumExp: Storage } {
    const [out, lse] = [new Float64Array(B * H * T * hs), new Float64Array(B * H * T)];
    attendCausal(d64(q), d64(k), d64(v), { pairs: B * H, qLen: T, qPos: 0, kvStride: T, hs }, out, lse);
    return { out: new F64Storage(out), logSumExp: new F64Storage(lse) };
  }
  embedding(ids: Storage, table: Storage, n: number, _vocab: number, dim: number): Storage {
    const [idv, tv] = [d64(ids), d64(table)];
    const out = new Float64Array(n * dim);
    for (let i = 0; i < n; i++) out.set(tv.subarray(idv[i] * dim, (idv[i] + 1) * dim), i * dim);
    return new F64Storage(out);
  }
  crossEntropy(logits: Storage, targets: Storage, weights: Storage, rows: number, vocab: number): { loss: Storage; dLogits: Storage } {
    const dLogits = new Float64Array(rows * vocab);
    const loss = crossEntropyRows(d64(logits), d64(targets), d64(weights), rows, vocab, dLogits);
    return { loss: new F64Storage(Float64Array.of(loss)), dLogits: new F64Storage(dLogits) };
  }
  layerNormBackward = unsupported('layerNormBackward');
  geluBackward = unsupported('geluBackward');
  softmaxBackward = unsupported('softmaxBackward');
  attentionBackward = unsupported('attentionBackward');
  cachedAttention = unsupported('cachedAttention');
  slotAttention = unsupported('slotAttention');
  embeddingBackward = unsupported('embeddingBackward');
  adamw = unsupported('adamw');

  /** The float64 values themselves, for a test that perturbs a parameter in place. */
  data64(x: Storage): Float64Array {
    const data = d64(x);
    if (!(data instanceof Float64Array)) throw new Error('data64: i32 storage');
    return data;
  }

  private like(x: Float64Array | Int32Array, size: number): Float64Array | Int32Array {
    return x instanceof Int32Array ? new Int32Array(size) : new Float64Array(size);
  }
}

export const float64 = new Float64Backend();

export interface GradInput {
  data: Float32Array;
  shape: readonly number[];
  /** Checked (and differentiated) unless false: constants such as a fixed exponent or a mask. */
  requiresGrad?: boolean;
}

export interface GradcheckOptions {
  /** Where backward() runs: the CPU reference (default) or WebGPU. */
  backend?: Backend;
  /** Relative step of the float64 differences: h = step·max(1, |x|). */
  step?: number;
  /** Seed of the loss weights r. */
  seed?: number;
}

export interface GradcheckResult {
  /** Per input (null where requiresGrad is false): the gradient from backward(). */
  analytic: (Float32Array | null)[];
  /** Per input: the central-difference gradient in float64. */
  numeric: (Float64Array | null)[];
  /** The largest relative error over the checked inputs (maxRelativeError: floor 1e-3 of the largest |gradient|). */
  maxError: number;
}

/** L = Σ f(x)·r, entirely in float64. */
function loss64(f: (...xs: Tensor[]) => Tensor, inputs: readonly { data: Float64Array | Float32Array; shape: readonly number[] }[], r: Float32Array): number {
  const out = noGrad(() => f(...inputs.map((x) => fromF64(x.data, x.shape))));
  const y = float64.read64(out.storage);
  if (y.length !== r.length) throw new Error(`f returned ${y.length} elements, then ${r.length}: its shape must not depend on the values`);
  let loss = 0;
  for (let i = 0; i < y.length; i++) loss += y[i] * r[i];
  return loss;
}

/** A float64 tensor holding exactly these values (tensor() would take f32). */
function fromF64(data: Float64Array | Float32Array, shape: readonly number[]): Tensor {
  return fromStorage(float64, new F64Storage(Float64Array.from(data)), shape);
}

/** The analytic (backward on `backend`) and float64 numeric gradients of Σ f(x)·r for each input that requires one. */
export async function gradcheck(f: (...xs: Tensor[]) => Tensor, inputs: readonly GradInput[], options: GradcheckOptions = {}): Promise<GradcheckResult> {
  const backend = options.backend ?? cpu;
  const step = options.step ?? 1e-6;
  const wants = inputs.map((x) => x.requiresGrad !== false);

  const leaves = inputs.map((x, k) => tensor(x.data, x.shape, { backend, requiresGrad: wants[k] }));
  const outShape = tidy(() => noGrad(() => f(...leaves)).shape);
  const r = randomArray(sizeOf(outShape), options.seed ?? 12345, 777);
  const loss = tidy(() => sum(mul(f(...leaves), tensor(r, outShape, { backend }))));
  backward(loss);
  loss.dispose();
  const analytic: (Float32Array | null)[] = [];
  for (const [k, leaf] of leaves.entries()) {
    if (!wants[k]) {
      analytic.push(null);
    } else if (leaf.grad === null) {
      throw new Error(`input ${k} got no gradient from backward()`);
    } else {
      if (leaf.grad.shape.join() !== leaf.shape.join()) throw new Error(`input ${k} of shape [${leaf.shape}] got a gradient of shape [${leaf.grad.shape}]`);
      analytic.push(await leaf.grad.toFloat32());
    }
    leaf.dispose();
  }

  const numeric: (Float64Array | null)[] = [];
  for (const [k, input] of inputs.entries()) {
    if (!wants[k]) {
      numeric.push(null);
      continue;
    }
    const data = Float64Array.from(input.data);
    const at = inputs.map((x, j) => (j === k ? { data, shape: x.shape } : x));
    const grad = new Float64Array(data.length);
    for (let i = 0; i < data.length; i++) {
      const x = input.data[i];
      const h = step * Math.max(1, Math.abs(x));
      data[i] = x + h;
      const plus = loss64(f, at, r);
      data[i] = x - h;
      const minus = loss64(f, at, r);
      grad[i] = (plus - minus) / (x + h - (x - h));
      data[i] = x;
    }
    numeric.push(grad);
  }

  let maxError = 0;
  for (let k = 0; k < inputs.length; k++) {
    if (wants[k]) maxError = Math.max(maxError, maxRelativeError(analytic[k]!, numeric[k]!));
  }
  return { analytic, numeric, maxError };
}
