// Being written: softmax.
export function softmax(..._args: any[]): any {
  throw new Error('softmax: not implemented yet');
}
export function softmaxBackward(..._args: any[]): any {
  throw new Error('softmaxBackward: not implemented yet');
}
