// Being written: embedding.
export function embedding(..._args: any[]): any {
  throw new Error('embedding: not implemented yet');
}
export function embeddingBackward(..._args: any[]): any {
  throw new Error('embeddingBackward: not implemented yet');
}
