// Being written: attention.
export function attention(..._args: any[]): any {
  throw new Error('attention: not implemented yet');
}
export function attentionBackward(..._args: any[]): any {
  throw new Error('attentionBackward: not implemented yet');
}
export function cachedAttention(..._args: any[]): any {
  throw new Error('cachedAttention: not implemented yet');
}
export function writeCache(..._args: any[]): any {
  throw new Error('writeCache: not implemented yet');
}
