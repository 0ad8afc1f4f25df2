/**
 * WGSL pieces shared by the kernels that reduce rows in workgroup memory: the lowest finite float
 * (the starting max of softmax, cross-entropy, attention and reduce), the merge of online-softmax
 * states (softmax, cross-entropy), and the (threads per row, rows per workgroup) table of the
 * row-wise kernels (softmax, layernorm).
 */

/**
 * -FLT_MAX, below every finite value, written as bits: WGSL rejects a decimal literal that rounds to
 * it (-3.4028235e38 is just past it), and -inf is out because compilers may assume no Inf.
 */
export const LOWEST_FINITE = 'bitcast<f32>(0xff7fffffu)';

/** Threads per row and rows per workgroup. */
export interface RowShape {
  tpr: number;
  rpg: number;
}

/**
 * A short fixed table, so the number of pipelines is bounded: rows up to 2048 elements take 16
 * threads each, four rows to a 64-thread workgroup (a CPU wants few threads per row, fewer barriers;
 * a GPU wide workgroups); longer rows (the vocabulary) a whole workgroup of 256 each, so the few
 * wide rows of a logits tensor still spread over many threads.
 */
export function rowShape(dim: number): RowShape {
  return dim <= 2048 ? { tpr: 16, rpg: 4 } : { tpr: 256, rpg: 1 };
}

/**
 * WGSL that merges the online-softmax states (m, s) = (running max, sum of exp(x − m)) of `width`
 * neighbouring threads by a tree in the workgroup arrays `maxs` and `sums`; `lane` is the thread's
 * index among them, `slot` its index in the arrays. The merged state ends at the group's first slot.
 * A thread that saw no element holds (LOWEST_FINITE, 0), which merges as nothing.
 */
export function mergeMaxSumWgsl(lane: string, slot: string, width: number): string {
  return /* wgsl */ `
  maxs[${slot}] = m;
  sums[${slot}] = s;
  workgroupBarrier();
  for (var stride = ${width / 2}u; stride > 0u; stride /= 2u) {
    if (${lane} < stride) {
      let m1 = maxs[${slot}];
      let m2 = maxs[${slot} + stride];
      let mm = max(m1, m2);
      sums[${slot}] = sums[${slot}] * exp(m1 - mm) + sums[${slot} + stride] * exp(m2 - mm);
      maxs[${slot}] = mm;
    }
    workgroupBarrier();
  }`;
}
