// Being written: gelu.
export function gelu(..._args: any[]): any {
  throw new Error('gelu: not implemented yet');
}
export function geluBackward(..._args: any[]): any {
  throw new Error('geluBackward: not implemented yet');
}
