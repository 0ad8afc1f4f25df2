/**
 * llm.c's layout: a module's trainable tensors moved into one allocation and their gradients into
 * another, each tensor a view of its slot, so that AdamW updates and the clip measures all of them
 * with one dispatch per binding window instead of a few per tensor. Any set of trainable tensors fits:
 * whatever `namedTrainableParameters()` yields (all of GPT-2, or only an adapter's few matrices);
 * frozen ones stay where they are and get no slot, so no gradient or moment memory.
 *
 * Slots start at the backend's view alignment (kernels bind a view where it begins). A layout larger
 * than one device buffer (maxStorageSize) is cut into blocks, one buffer each, at slot boundaries:
 * one dispatch per block then. The padding between them is zero in every buffer of the layout and
 * stays zero under AdamW (0 · decay − lr · 0).
 * backward() writes each gradient into its slot (Tensor.gradTarget); a slot whose tensor got no
 * gradient holds stale values, so the optimizer reads only the runs of slots that did.
 *
 * Each buffer of the layout starts its slots a different number of KiB in (FlatBuffer.lead). AdamW
 * streams element i of four buffers at once, and equal-sized buffers allocated one after another sit
 * a multiple of their size apart: on a CPU device (lavapipe) four streams whose addresses agree
 * modulo a large power of two conflict in the core's caches, which the leads break (docs/kernels.md,
 * the flat optimizer layout).
 */
import type { Module } from '../nn/module.js';
import { isHalfDType, type Backend } from '../tensor/backend.js';
import { zeros } from '../tensor/create.js';
import { assign } from '../tensor/ops.js';
import { keep } from '../tensor/scope.js';
import type { Tensor } from '../tensor/tensor.js';

export interface FlatSlot {
  name: string;
  shape: readonly number[];
  /** Which of the flat buffers holds it. */
  block: number;
  /** First element in its block. */
  offset: number;
  /** Elements up to the next slot's start (the tensor's, then padding). */
  extent: number;
}

/** A stretch [offset, offset + size) of one block of the flat buffers. */
export interface FlatRun {
  block: number;
  offset: number;
  size: number;
}

/** How many buffers of the layout one kernel streams at once (AdamW: values, gradients, two moments). */
const STREAMS = 4;

/** Bytes between the leads of consecutive buffers of the layout: apart in the low address bits the caches index by. */
const STAGGER_BYTES = 1024;

/** One buffer of the layout (the values, the gradients, a moment): one tensor per block, each slot `lead` elements past its layout offset. */
export class FlatBuffer {
  constructor(readonly blocks: readonly Tensor[], readonly lead: number) {}

  /** The run's elements of this buffer, as one vector. */
  run({ block, offset, size }: FlatRun): Tensor {
    return this.blocks[block].view(this.lead + offset, [size]);
  }

  /** The slot's elements of this buffer, in its tensor's shape. */
  slot({ block, offset, shape }: FlatSlot): Tensor {
    return this.blocks[block].view(this.lead + offset, shape);
  }

  dispose(): void {
    for (const t of this.blocks) t.dispose();
  }
}

export class FlatParameters {
  readonly slots: readonly FlatSlot[];
  /** Elements in each block (each buffer's block holds its lead more). */
  readonly blockSizes: readonly number[];
  /** The parameters' values; the module's parameters are views of them. */
  readonly params: FlatBuffer;
  /** The parameters' gradients, where backward() writes them. */
  readonly grads: FlatBuffer;
  /** The views the module holds, in slot order. */
  private readonly views: Tensor[];
  private readonly backend: Backend;
  /** Elements between the leads of consecutive buffers: STAGGER_BYTES, whole view alignments. */
  private readonly stagger: number;
  private buffersMade = 0;

  constructor(model: Module) {
    const named = model.namedTrainableParameters();
    if (named.length === 0) throw new Error('the model has no trainable parameter (all are frozen)');
    const backend = named[0][1].backend;
    for (const [name, p] of named) {
      if (p.backend !== backend) throw new Error(`${name} lives on ${p.backend.name}, ${named[0][0]} on ${backend.name}: one flat buffer needs one backend`);
      if (isHalfDType(p.dtype)) throw new Error(`${name} is stored in ${p.dtype}: full fine-tuning updates every weight and needs them in f32; load the model with dtype 'f32', or train an adapter (addLoRA) over the frozen ${p.dtype} base`);
      if (p.dtype !== 'f32') throw new Error(`${name} is ${p.dtype}: trainable parameters are f32`);
    }
    const align = backend.viewAlignment;
    this.stagger = Math.ceil(STAGGER_BYTES / 4 / align) * align;
    const capacity = backend.maxStorageSize - (STREAMS - 1) * this.stagger;
    const slots: FlatSlot[] = [];
    const blockSizes = [0];
    for (const [name, p] of named) {
      const extent = Math.ceil(p.size / align) * align;
      if (extent > capacity) throw new Error(`${name} (${p.size} elements) does not fit one device buffer (${backend.maxStorageSize}, less ${backend.maxStorageSize - capacity} for the buffers' leads)`);
      if (blockSizes.at(-1)! + extent > capacity) blockSizes.push(0);
      slots.push({ name, shape: [...p.shape], block: blockSizes.length - 1, offset: blockSizes.at(-1)!, extent });
      blockSizes[blockSizes.length - 1] += extent;
    }
    this.slots = slots;
    this.blockSizes = blockSizes;
    this.backend = backend;
    this.params = this.zeroBuffer();
    this.views = slots.map((slot, i) => {
      const view = this.params.slot(slot);
      assign(view, named[i][1]);
      model.replaceParameter(slot.name, view);
      return view;
    });
    // The parameters' former storages (and their initialisation's temporaries) are sizes no training
    // step asks for again: pooled, they would hold as much memory as the weights for the whole run.
    backend.releaseCached();
    this.grads = this.zeroBuffer();
    this.views.forEach((view, i) => { view.gradTarget = keep(this.grads.slot(slots[i])); });
  }

  /** A zero-filled buffer of this layout (one of AdamW's moments), and a view of it per slot. */
  zerosLike(): { buffer: FlatBuffer; views: Map<string, Tensor> } {
    const buffer = this.zeroBuffer();
    return { buffer, views: new Map(this.slots.map((s) => [s.name, keep(buffer.slot(s))])) };
  }

  private zeroBuffer(): FlatBuffer {
    const lead = (this.buffersMade++ % STREAMS) * this.stagger;
    return new FlatBuffer(this.blockSizes.map((size) => keep(zeros([lead + size], { backend: this.backend }))), lead);
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
      const { block, offset, extent } = this.slots[i];
      if (p.grad === null) return;
      if (p.grad.storage !== p.gradTarget!.storage) assign(p.gradTarget!, p.grad);
      const last = runs.at(-1);
      if (last !== undefined && last.block === block && last.offset + last.size === offset) last.size += extent;
      else runs.push({ block, offset, size: extent });
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

  /**
   * Releases this object's hold on the buffers and the parameters' on their gradient slots: the
   * gradient buffers go (unless a gradient is still held), the parameter buffers live on while the
   * module's views do.
   */
  dispose(): void {
    for (const view of this.views) {
      view.gradTarget?.dispose();
      view.gradTarget = null;
    }
    this.params.dispose();
    this.grads.dispose();
  }
}
