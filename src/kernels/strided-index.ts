/**
 * Strided indexing up to rank 8, shared by the broadcasting element-wise kernel and the strided copy
 * (permute, slice, pad): the shape and each operand's strides travel in uniforms as
 * `array<vec4u, 2>` (eight u32s, zero-padded), and a loop turns a flat output index into one element
 * offset per operand.
 */
export const MAX_RANK = 8;

/** WGSL type of a uniform field holding MAX_RANK u32s. */
export const RANK_ARRAY_WGSL = `array<vec4u, ${MAX_RANK / 4}>`;

/** Values zero-padded to MAX_RANK, as the uniform fields hold them. */
export function padToMaxRank(values: readonly number[]): number[] {
  return [...values, ...new Array<number>(MAX_RANK - values.length).fill(0)];
}

/**
 * WGSL statements that declare `var <name> = <start>` for each operand and add to it the flat index
 * `i`'s position along each axis times `params.<strides>`; reads `params.rank` and `params.shape`.
 */
export function stridedOffsetsWgsl(operands: readonly { name: string; start: string; strides: string }[]): string {
  return /* wgsl */ `
  var rest = i;
${operands.map(({ name, start }) => `  var ${name} = ${start};`).join('\n')}
  for (var axis = i32(params.rank) - 1; axis >= 0; axis--) {
    let size = params.shape[axis / 4][axis % 4];
    let index = rest % size;
    rest = rest / size;
${operands.map(({ name, strides }) => `    ${name} += index * params.${strides}[axis / 4][axis % 4];`).join('\n')}
  }`;
}
