// Being written: cross-entropy.
export function crossEntropy(..._args: any[]): any {
  throw new Error('crossEntropy: not implemented yet');
}
