// Being written: adamw.
export function adamw(..._args: any[]): any {
  throw new Error('adamw: not implemented yet');
}
