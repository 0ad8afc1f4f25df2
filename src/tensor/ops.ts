/**
 * Tensor-level ops: each runs on the backend that holds its inputs and records a graph node for
 * backward. Primitive ops map one-to-one onto the Backend; the rest is composition.
 */
import { isHalfDType, type BinaryOp, type MatmulShape, type UnaryOp } from './backend.js';
import { full } from './create.js';
import { isGradEnabled, record, type OpName } from './graph.js';
import { broadcastShapes, normalizeAxis, padToRank, sameShape, sizeOf } from './shape.js';
import { Tensor } from './tensor.js';

type Scalar = number;

function sameBackend(...ts: Tensor[]): void {
  for (const t of ts) {
    if (t.backend !== ts[0].backend) throw new Error(`tensors live on different backends: ${ts[0].backend.name} and ${t.backend.name}`);
  }
}

/** Element-wise ops and reductions compute in f32 (WebGPU would read i32 bits as floats): cast first. */
function expectF32(op: string, ...ts: Tensor[]): void {
  for (const t of ts) {
    if (t.dtype !== 'f32') throw new Error(`${op} takes f32 tensors, got ${t.dtype} of shape [${t.shape}]: cast() it first`);
  }
}

/** f16 and bf16 are a frozen weight's storage, read only by matmul (as B) and the embedding (as the table). */
function expectNotHalf(op: string, ...ts: Tensor[]): void {
  for (const t of ts) {
    if (isHalfDType(t.dtype)) throw new Error(`${op} does not take ${t.dtype} tensors (shape [${t.shape}]): ${t.dtype} holds frozen weights, read by matmul (as B) and embedding`);
  }
}

function asTensor(x: Tensor | Scalar, like: Tensor): Tensor {
  return typeof x === 'number' ? full([], x, { backend: like.backend }) : x;
}

// --- element-wise ---

function unary(op: UnaryOp & OpName, x: Tensor, saveOutput = false): Tensor {
  expectF32(op, x);
  const out = new Tensor(x.backend, x.backend.unary(op, x.storage), x.shape);
  return record(out, op, [x], {}, saveOutput ? [out] : [x]);
}

export const neg = (x: Tensor): Tensor => unary('neg', x);
export const exp = (x: Tensor): Tensor => unary('exp', x, true);
export const log = (x: Tensor): Tensor => unary('log', x);
export const sqrt = (x: Tensor): Tensor => unary('sqrt', x, true);
export const tanh = (x: Tensor): Tensor => unary('tanh', x, true);
export const relu = (x: Tensor): Tensor => unary('relu', x);
export const abs = (x: Tensor): Tensor => unary('abs', x);

function binaryStorage(op: BinaryOp, a: Tensor, b: Tensor): Tensor {
  sameBackend(a, b);
  expectF32(op, a, b);
  const outShape = broadcastShapes(a.shape, b.shape);
  const rank = outShape.length;
  const storage = a.backend.binary(op, a.storage, padToRank(a.shape, rank), b.storage, padToRank(b.shape, rank), outShape);
  return new Tensor(a.backend, storage, outShape);
}

type DifferentiableBinary = 'add' | 'sub' | 'mul' | 'div' | 'maximum' | 'minimum' | 'pow';
const backendOp: Record<DifferentiableBinary, BinaryOp> = {
  add: 'add', sub: 'sub', mul: 'mul', div: 'div', maximum: 'max', minimum: 'min', pow: 'pow',
};

function binary(op: DifferentiableBinary, a: Tensor | Scalar, b: Tensor | Scalar): Tensor {
  const like = typeof a === 'number' ? (b as Tensor) : a;
  const ta = asTensor(a, like);
  const tb = asTensor(b, like);
  const out = binaryStorage(backendOp[op], ta, tb);
  return record(out, op, [ta, tb], {}, op === 'add' || op === 'sub' ? [] : [ta, tb]);
}

export const add = (a: Tensor | Scalar, b: Tensor | Scalar): Tensor => binary('add', a, b);
export const sub = (a: Tensor | Scalar, b: Tensor | Scalar): Tensor => binary('sub', a, b);
export const mul = (a: Tensor | Scalar, b: Tensor | Scalar): Tensor => binary('mul', a, b);
export const div = (a: Tensor | Scalar, b: Tensor | Scalar): Tensor => binary('div', a, b);
export const maximum = (a: Tensor | Scalar, b: Tensor | Scalar): Tensor => binary('maximum', a, b);
export const minimum = (a: Tensor | Scalar, b: Tensor | Scalar): Tensor => binary('minimum', a, b);
export const pow = (a: Tensor | Scalar, b: Tensor | Scalar): Tensor => binary('pow', a, b);

/** 1 where a > b, else 0; not differentiable. */
export const greater = (a: Tensor, b: Tensor | Scalar): Tensor => binaryStorage('gt', a, asTensor(b, a));
/** 1 where a == b, else 0; not differentiable. */
export const equal = (a: Tensor, b: Tensor | Scalar): Tensor => binaryStorage('eq', a, asTensor(b, a));

export function where(cond: Tensor, a: Tensor | Scalar, b: Tensor | Scalar): Tensor {
  const ta = asTensor(a, cond);
  const tb = asTensor(b, cond);
  sameBackend(cond, ta, tb);
  expectF32('where', cond, ta, tb);
  const outShape = broadcastShapes(broadcastShapes(cond.shape, ta.shape), tb.shape);
  const rank = outShape.length;
  const storage = cond.backend.where(
    cond.storage, padToRank(cond.shape, rank), ta.storage, padToRank(ta.shape, rank), tb.storage, padToRank(tb.shape, rank), outShape,
  );
  return record(new Tensor(cond.backend, storage, outShape), 'where', [ta, tb], {}, [cond]);
}

/** Writes `value`'s elements into `target` in place (same size and dtype); not differentiable. */
export function assign(target: Tensor, value: Tensor): void {
  sameBackend(target, value);
  if (target.size !== value.size || target.dtype !== value.dtype) {
    throw new Error(`assign: a value of shape [${value.shape}] (${value.dtype}) into a tensor of shape [${target.shape}] (${target.dtype})`);
  }
  target.backend.copy(value.storage, target.storage);
}

export function cast(x: Tensor, dtype: 'f32' | 'i32'): Tensor {
  expectNotHalf('cast', x);
  return x.dtype === dtype ? x.share() : new Tensor(x.backend, x.backend.cast(x.storage, dtype), x.shape);
}

// --- reductions ---

/** Sums over `axis` (all axes when omitted). */
export function sum(x: Tensor, axis?: number, keepDims = false): Tensor {
  return reduce('sum', x, axis, keepDims);
}

export function max(x: Tensor, axis?: number, keepDims = false): Tensor {
  return reduce('max', x, axis, keepDims);
}

export function mean(x: Tensor, axis?: number, keepDims = false): Tensor {
  const count = axis === undefined ? x.size : x.shape[normalizeAxis(axis, x.rank)];
  return div(sum(x, axis, keepDims), count);
}

function reduce(op: 'sum' | 'max', x: Tensor, axis: number | undefined, keepDims: boolean): Tensor {
  if (axis === undefined) {
    const all = reduce(op, reshape(x, [x.size]), 0, false);
    return keepDims ? reshape(all, x.shape.map(() => 1)) : all;
  }
  expectF32(op, x);
  const a = normalizeAxis(axis, x.rank);
  const keptShape = x.shape.map((d, i) => (i === a ? 1 : d));
  const out = new Tensor(x.backend, x.backend.reduce(op, x.storage, x.shape, a), keptShape);
  record(out, op, [x], { axis: a }, op === 'max' ? [x, out] : []);
  return keepDims ? out : reshape(out, x.shape.filter((_, i) => i !== a));
}

/** Sums a broadcast gradient back to `shape`: the one place broadcasting is undone. */
export function sumToShape(x: Tensor, shape: readonly number[]): Tensor {
  if (sameShape(x.shape, shape)) return x;
  let out = x;
  const extra = x.rank - shape.length;
  for (let i = 0; i < x.rank; i++) {
    const target = i < extra ? 1 : shape[i - extra];
    if (target === 1 && x.shape[i] !== 1) out = sum(out, i, true);
  }
  return reshape(out, shape);
}

// --- layout ---

export function reshape(x: Tensor, shape: readonly number[]): Tensor {
  const inferred = shape.indexOf(-1);
  const resolved = [...shape];
  if (inferred >= 0) resolved[inferred] = x.size / -sizeOf(shape);
  if (sizeOf(resolved) !== x.size || !resolved.every(Number.isInteger)) {
    throw new Error(`cannot reshape [${x.shape}] (${x.size} elements) to [${shape}]`);
  }
  return record(x.share(resolved), 'reshape', [x], {});
}

export function permute(x: Tensor, perm: readonly number[]): Tensor {
  if (perm.length !== x.rank || [...perm].sort((p, q) => p - q).some((p, i) => p !== i)) {
    throw new Error(`permutation [${perm}] does not fit rank ${x.rank}`);
  }
  expectNotHalf('permute', x);
  const outShape = perm.map((p) => x.shape[p]);
  return record(new Tensor(x.backend, x.backend.permute(x.storage, x.shape, perm), outShape), 'permute', [x], { perm: [...perm] });
}

/** Swaps two axes (a copy, through the permute kernel). */
export function transpose(x: Tensor, a = -2, b = -1): Tensor {
  const perm = x.shape.map((_, i) => i);
  const i = normalizeAxis(a, x.rank);
  const j = normalizeAxis(b, x.rank);
  [perm[i], perm[j]] = [perm[j], perm[i]];
  return permute(x, perm);
}

export function slice(x: Tensor, begin: readonly number[], size: readonly number[]): Tensor {
  if (begin.length !== x.rank || size.length !== x.rank || begin.some((b, i) => b < 0 || size[i] < 0 || b + size[i] > x.shape[i])) {
    throw new Error(`slice begin [${begin}] size [${size}] is out of bounds for shape [${x.shape}]`);
  }
  expectNotHalf('slice', x);
  const out = new Tensor(x.backend, x.backend.slice(x.storage, x.shape, begin, size), size);
  return record(out, 'slice', [x], { begin: [...begin], size: [...size] });
}

export function pad(x: Tensor, begin: readonly number[], outShape: readonly number[]): Tensor {
  if (begin.length !== x.rank || outShape.length !== x.rank || begin.some((b, i) => b < 0 || b + x.shape[i] > outShape[i])) {
    throw new Error(`pad of [${x.shape}] at [${begin}] does not fit in [${outShape}]`);
  }
  expectNotHalf('pad', x);
  const out = new Tensor(x.backend, x.backend.pad(x.storage, x.shape, begin, outShape), outShape);
  return record(out, 'pad', [x], { begin: [...begin], outShape: [...outShape] });
}

/** Splits `axis` into pieces of the given sizes. */
export function split(x: Tensor, sizes: readonly number[], axis = 0): Tensor[] {
  const a = normalizeAxis(axis, x.rank);
  if (sizes.reduce((p, q) => p + q, 0) !== x.shape[a]) throw new Error(`split sizes [${sizes}] do not add up to axis ${axis} of [${x.shape}]`);
  let start = 0;
  return sizes.map((size) => {
    const begin = x.shape.map((_, i) => (i === a ? start : 0));
    const shape = x.shape.map((d, i) => (i === a ? size : d));
    start += size;
    return slice(x, begin, shape);
  });
}

/** Joins tensors along `axis` (split's inverse): each is padded to the whole, and the pads are summed. */
export function concat(xs: readonly Tensor[], axis = 0): Tensor {
  if (xs.length === 0) throw new Error('concat needs at least one tensor');
  const a = normalizeAxis(axis, xs[0].rank);
  const outShape = xs[0].shape.map((d, i) => (i === a ? xs.reduce((n, x) => n + x.shape[a], 0) : d));
  const misfit = xs.find((x) => x.rank !== outShape.length || x.shape.some((d, i) => i !== a && d !== outShape[i]));
  if (misfit) throw new Error(`concat along axis ${axis}: [${misfit.shape}] does not match [${xs[0].shape}]`);
  let start = 0;
  const padded = xs.map((x) => {
    const begin = x.shape.map((_, i) => (i === a ? start : 0));
    start += x.shape[a];
    return pad(x, begin, outShape);
  });
  return padded.reduce((sum, x) => add(sum, x));
}

// --- matmul ---

export interface MatmulOptions {
  transA?: boolean;
  transB?: boolean;
  bias?: Tensor;
  /**
   * gelu(product + bias) + residual in the same kernel (see MatmulEpilogue). Inference only: refused
   * while recording a graph (fused.ts's linear() composes the ops there).
   */
  epilogue?: { gelu?: boolean; residual?: Tensor };
}

/**
 * a [..., m, k] · b [..., k, n] (or b [k, n] shared by every batch), with optional transposes and a
 * bias [n] added in the same kernel. b may be f16 or bf16 (a weight stored in 16 bits); the rest is f32.
 */
export function matmul(a: Tensor, b: Tensor, { transA = false, transB = false, bias, epilogue }: MatmulOptions = {}): Tensor {
  const residual = epilogue?.residual;
  sameBackend(a, b, ...(bias ? [bias] : []), ...(residual ? [residual] : []));
  if (a.rank < 2 || b.rank < 2) throw new Error(`matmul needs matrices, got [${a.shape}] and [${b.shape}]`);
  expectF32('matmul', a, ...(bias ? [bias] : []), ...(residual ? [residual] : []));
  if (b.dtype === 'i32') throw new Error(`matmul takes an f32, f16 or bf16 B, got i32 of shape [${b.shape}]`);
  const [ar, ac] = a.shape.slice(-2);
  const [br, bc] = b.shape.slice(-2);
  const [m, k] = transA ? [ac, ar] : [ar, ac];
  const [kb, n] = transB ? [bc, br] : [br, bc];
  if (k !== kb) throw new Error(`matmul inner sizes differ: [${a.shape}]${transA ? 'ᵀ' : ''} · [${b.shape}]${transB ? 'ᵀ' : ''}`);
  const batchShape = a.shape.slice(0, -2);
  const broadcastB = b.rank === 2;
  if (!broadcastB && !sameShape(b.shape.slice(0, -2), batchShape)) {
    throw new Error(`matmul batch shapes differ: [${a.shape}] and [${b.shape}]`);
  }
  if (bias && (bias.rank !== 1 || bias.shape[0] !== n)) throw new Error(`matmul bias must be [${n}], got [${bias.shape}]`);
  const batch = sizeOf(batchShape);
  // A shared B with an untransposed A is one big product: fold the batch into the rows.
  const folded = broadcastB && !transA;
  const shape: MatmulShape = folded
    ? { batch: 1, m: batch * m, k, n, transA, transB, broadcastB }
    : { batch, m, k, n, transA, transB, broadcastB };
  const outShape = [...batchShape, m, n];
  if (epilogue) {
    if (isGradEnabled() && [a, b, bias, residual].some((t) => t?.requiresGrad)) {
      throw new Error('a matmul epilogue is for inference (it records no graph): call it inside noGrad(), or compose the ops');
    }
    if (residual && !sameShape(residual.shape, outShape)) throw new Error(`matmul residual must be [${outShape}], got [${residual.shape}]`);
  }
  const storage = a.backend.matmul(a.storage, b.storage, bias?.storage ?? null, shape, epilogue && { gelu: epilogue.gelu, residual: residual?.storage });
  const out = new Tensor(a.backend, storage, outShape);
  return record(out, 'matmul', bias ? [a, b, bias] : [a, b], shape, [a, b]);
}
