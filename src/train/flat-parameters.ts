/**
 * llm.c's layout: a module's trainable tensors moved into one allocation and their gradients into
 * another, each tensor a view of its slot, so that AdamW updates and the clip measures all of them
 * with one dispatch per binding window instead of a few per tensor. Any set of trainable tensors fits:
 * whatever `namedParameters()` yields (all of GPT-2, or only an adapter's few matrices).
 *
 * Slots start at the backend's view alignment (kernels bind a view where it begins). The padding
 * between them is zero in every buffer of the layout and stays zero under AdamW (0 · decay − lr · 0).
 * backward() writes each gradient into its slot (Tensor.gradTarget); a slot whose tensor got no
 * gradient holds stale values, so the optimizer reads only the runs of slots that did.
 */
import type { Module } from '../nn/module.js';
import { zeros } from '../tensor/create.js';
import { assign } from '../tensor/ops.js';
import { keep } from '../tensor/scope.js';
import type { Tensor } from '../tensor/tensor.js';

export interface FlatSlot {
  name: string;
  shape: readonly number[];
  /** First element in the flat buffers. */
  offset: number;
  /** Elements up to the next slot's start (the tensor's, then padding). */
  extent: number;
}

/** A stretch [offset, offset + size) of the flat buffers. */
export interface FlatRun {
  offset: number;
  size: number;
}

export class FlatParameters {
  readonly slots: readonly FlatSlot[];
  /** Elements in each flat buffer. */
  readonly size: number;
  /** [size]: every parameter's values; the module's parameters are views of it. */
  readonly params: Tensor;
  /** [size]: every parameter's gradient, where backward() writes it. */
  readonly grads: Tensor;
  /** The views the module holds, in slot order. */
  private readonly views: Tensor[];

  constructor(model: Module) {
    const named = model.namedParameters();
    if (named.length === 0) throw new Error('the model has no trainable parameter');
    const backend = named[0][1].backend;
    for (const [name, p] of named) {
      if (p.backend !== backend) throw new Error(`${name} lives on ${p.backend.name}, ${named[0][0]} on ${backend.name}: one flat buffer needs one backend`);
      if (p.dtype !== 'f32') throw new Error(`${name} is ${p.dtype}: trainable parameters are f32`);
    }
    const align = backend.viewAlignment;
    const slots: FlatSlot[] = [];
    let size = 0;
    for (const [name, p] of named) {
      const extent = Math.ceil(p.size / align) * align;
      slots.push({ name, shape: [...p.shape], offset: size, extent });
      size += extent;
    }
    this.slots = slots;
    this.size = size;
    this.params = keep(zeros([size], { backend }));
    this.grads = keep(zeros([size], { backend }));
    this.views = slots.map(({ name, shape, offset }, i) => {
      const view = this.params.view(offset, shape);
      assign(view, named[i][1]);
      view.gradTarget = keep(this.grads.view(offset, shape));
      model.replaceParameter(name, view);
      return view;
    });
  }

  /** A zero-filled buffer of this layout (AdamW's moments), and a view of it per slot. */
  zerosLike(): { whole: Tensor; views: Map<string, Tensor> } {
    const whole = keep(zeros([this.size], { backend: this.params.backend }));
    return { whole, views: new Map(this.slots.map((s) => [s.name, keep(whole.view(s.offset, s.shape))])) };
  }

  /** The module's parameters, in slot order. */
  parameters(): Tensor[] {
    return this.views.map((view, i) => {
      if (view.isDisposed) throw new Error(`${this.slots[i].name} was replaced or disposed after its flat buffer was made: build the optimizer after loading weights`);
      return view;
    });
  }

  /**
   * The stretches of consecutive slots whose tensors have a gradient in this step, each with the
   * padding after it: the whole buffer when every tensor has one. A gradient set by hand, not by
   * backward(), is first copied into its slot.
   */
  gradientRuns(): FlatRun[] {
    const runs: FlatRun[] = [];
    this.parameters().forEach((p, i) => {
      const { offset, extent } = this.slots[i];
      if (p.grad === null) return;
      if (p.grad.storage !== p.gradTarget!.storage) assign(p.gradTarget!, p.grad);
      const last = runs.at(-1);
      if (last !== undefined && last.offset + last.size === offset) last.size += extent;
      else runs.push({ offset, size: extent });
    });
    return runs;
  }

  /** Drops every gradient; the slots keep their values until backward() writes the next ones. */
  zeroGrad(): void {
    for (const p of this.parameters()) {
      p.grad?.dispose();
      p.grad = null;
    }
  }

  /** Releases this object's hold on the buffers; they live on while the module's views do. */
  dispose(): void {
    this.params.dispose();
    this.grads.dispose();
  }
}
