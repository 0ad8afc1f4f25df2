import type { Backend, DType, Storage } from './backend.js';
import { releaseNode, type GraphNode } from './graph.js';
import { trackInScope } from './scope.js';
import { sizeOf } from './shape.js';

/**
 * Storage shared by a tensor and its reshapes; released when the last of them is disposed. A view's
 * storage holds its base's, so the base lives until its last view is disposed too.
 */
class SharedStorage {
  private refs = 1;
  constructor(readonly backend: Backend, readonly storage: Storage, private readonly base: SharedStorage | null = null) {}

  retain(): this {
    this.refs++;
    return this;
  }

  release(): void {
    if (--this.refs > 0) return;
    this.backend.release(this.storage);
    this.base?.release();
  }
}

export class Tensor {
  readonly shape: readonly number[];
  readonly size: number;
  requiresGrad = false;
  grad: Tensor | null = null;
  /**
   * Where backward() puts this leaf's gradient, in place: a view into a flat gradient buffer (see
   * src/train/flat-parameters.ts), owned by this tensor. Null: the gradient is a tensor of its own.
   */
  gradTarget: Tensor | null = null;
  /**
   * How this tensor was computed, while a backward pass may still need it. Disposing the tensor
   * keeps it while a live tensor's graph still reaches it (backward reads only shapes and the node's
   * own saved handles), so a loss returned from a tidy whose intermediates were disposed still
   * differentiates; the node and what it saved go when nothing live reaches it, or when backward()
   * has run its rule.
   */
  node: GraphNode | null = null;
  private shared: SharedStorage | null;

  /** Takes ownership of `storage`. Prefer the creation functions in `create.ts`. */
  constructor(backend: Backend, storage: Storage, shape: readonly number[]);
  constructor(shared: SharedStorage, shape: readonly number[]);
  constructor(a: Backend | SharedStorage, b: Storage | readonly number[], c?: readonly number[]) {
    if (a instanceof SharedStorage) {
      this.shared = a;
      this.shape = [...(b as readonly number[])];
    } else {
      this.shared = new SharedStorage(a, b as Storage);
      this.shape = [...c!];
    }
    this.size = sizeOf(this.shape);
    if (this.size !== this.storage.size) {
      throw new Error(`shape [${this.shape}] holds ${this.size} elements but the storage holds ${this.storage.size}`);
    }
    trackInScope(this);
  }

  get backend(): Backend {
    return this.live().backend;
  }

  get storage(): Storage {
    return this.live().storage;
  }

  get dtype(): DType {
    return this.storage.dtype;
  }

  get rank(): number {
    return this.shape.length;
  }

  get isDisposed(): boolean {
    return this.shared === null;
  }

  /** Another handle on the same storage (free): the storage lives until both are disposed. */
  share(shape: readonly number[] = this.shape): Tensor {
    return new Tensor(this.live().retain(), shape);
  }

  /**
   * A tensor of `shape` on this one's elements from `offset` (a multiple of the backend's
   * viewAlignment), sharing its memory: writes through either are seen by both, and the memory
   * lives until both are disposed.
   */
  view(offset: number, shape: readonly number[]): Tensor {
    const base = this.live();
    const storage = base.backend.view(base.storage, offset, sizeOf(shape));
    return new Tensor(new SharedStorage(base.backend, storage, base.retain()), shape);
  }

  async data(): Promise<Float32Array | Int32Array> {
    return this.backend.read(this.storage);
  }

  async toFloat32(): Promise<Float32Array> {
    const data = await this.data();
    return data instanceof Float32Array ? data : Float32Array.from(data);
  }

  async item(): Promise<number> {
    if (this.size !== 1) throw new Error(`item() needs a tensor of one element, got shape [${this.shape}]`);
    return (await this.data())[0];
  }

  dispose(): void {
    if (this.shared === null) return;
    this.shared.release();
    this.shared = null;
    releaseNode(this);
    this.grad?.dispose();
    this.grad = null;
    this.gradTarget?.dispose();
    this.gradTarget = null;
  }

  toString(): string {
    return `Tensor(shape=[${this.shape}], dtype=${this.isDisposed ? 'disposed' : this.dtype})`;
  }

  private live(): SharedStorage {
    if (this.shared === null) throw new Error(`use of a disposed tensor of shape [${this.shape}]`);
    return this.shared;
  }
}
