// Being written: matmul.
export function matmul(..._args: any[]): any {
  throw new Error('matmul: not implemented yet');
}
