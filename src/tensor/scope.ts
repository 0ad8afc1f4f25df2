/**
 * Deterministic memory: JavaScript has no destructors, so every tensor created inside `tidy(fn)` is
 * disposed when fn returns, except what fn returns and what it `keep`s. Tensors made outside any
 * scope (parameters, caches) live until disposed by hand.
 */
import type { Tensor } from './tensor.js';

const scopes: Set<Tensor>[] = [];

export function trackInScope(t: Tensor): void {
  scopes[scopes.length - 1]?.add(t);
}

/** Removes `t` from every enclosing scope, so it outlives them. */
export function keep<T extends Tensor>(t: T): T {
  for (const scope of scopes) scope.delete(t);
  return t;
}

/** Everything a tidy function may return: the tensors in it survive the scope. */
type Kept = Tensor | readonly Kept[] | { readonly [key: string]: Kept } | number | string | boolean | null | undefined | void;

export function tidy<T extends Kept>(fn: () => T): T {
  if ((fn as unknown as { constructor: { name: string } }).constructor.name === 'AsyncFunction') {
    throw new Error('tidy() takes a synchronous function: tensors made after an await would escape the scope');
  }
  const scope = new Set<Tensor>();
  scopes.push(scope);
  let result: T;
  try {
    result = fn();
  } catch (error) {
    for (const t of scope) t.dispose();
    throw error;
  } finally {
    scopes.pop();
  }
  const survivors = new Set<Tensor>();
  collectTensors(result, survivors);
  for (const t of scope) {
    if (survivors.has(t)) scopes[scopes.length - 1]?.add(t);
    else t.dispose();
  }
  return result;
}

function collectTensors(value: unknown, into: Set<Tensor>): void {
  if (value === null || typeof value !== 'object') return;
  if ('shape' in value && 'dispose' in value) {
    into.add(value as Tensor);
  } else if (Array.isArray(value)) {
    for (const v of value) collectTensors(v, into);
  } else {
    for (const v of Object.values(value)) collectTensors(v, into);
  }
}
