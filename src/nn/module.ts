/**
 * Modules are plain classes. Parameters are found by walking fields: a Tensor is a parameter
 * (trainable while it requires a gradient, frozen otherwise), a Module is walked recursively, and an array of Modules names its items
 * by index — so `h[3].attn.c_attn.weight` is the parameter `h.3.attn.c_attn.weight`, the name the
 * Hugging Face checkpoint uses.
 */
import { isHalfDType, type DType } from '../tensor/backend.js';
import { tensor } from '../tensor/create.js';
import { halfDTypeOf, narrowTo, overflowIn, rangeOf, widen16 } from '../tensor/half.js';
import { keep } from '../tensor/scope.js';
import type { Tensor } from '../tensor/tensor.js';

/** A tensor on the host: what weight files hold and what `loadStateDict` uploads. A Uint16Array holds f16 bit patterns, a Bfloat16Array bf16 ones. */
export interface HostTensor {
  shape: readonly number[];
  data: Float32Array | Uint16Array;
}

/**
 * Host values in a parameter's storage type: to 16 bits rounds to nearest even (f16 ↔ bf16 through
 * f32: the widening is exact, so only the last step rounds), to f32 widens exactly.
 */
function asStorageType(data: Float32Array | Uint16Array, dtype: DType): Float32Array | Uint16Array {
  if (!isHalfDType(dtype)) return data instanceof Uint16Array ? widen16(data) : data;
  if (data instanceof Uint16Array && halfDTypeOf(data) === dtype) return data;
  return narrowTo(dtype, data instanceof Uint16Array ? widen16(data) : data);
}

/** The values a parameter of `dtype` cannot hold: finite ones that would round to ±Infinity. */
function overflowCount(data: Float32Array | Uint16Array, dtype: DType): number {
  if (!isHalfDType(dtype) || (data instanceof Uint16Array && halfDTypeOf(data) === dtype)) return 0;
  return overflowIn(dtype, data instanceof Uint16Array ? widen16(data) : data);
}

interface ParameterSlot {
  name: string;
  owner: Record<string, unknown>;
  key: string;
}

function isTensor(value: unknown): value is Tensor {
  return typeof value === 'object' && value !== null && 'shape' in value && 'requiresGrad' in value;
}

export abstract class Module {
  training = true;

  /** Every parameter, trainable or frozen: the model's state, what weight files hold. */
  namedParameters(): [string, Tensor][] {
    return this.parameterSlots().map(({ name, owner, key }) => [name, owner[key] as Tensor]);
  }

  /** The parameters that require a gradient: what an optimizer updates. */
  namedTrainableParameters(): [string, Tensor][] {
    return this.namedParameters().filter(([, t]) => t.requiresGrad);
  }

  /** Makes every parameter frozen: no gradient, so no gradient buffer and no weight-gradient product. */
  freeze(): this {
    for (const p of this.parameters()) p.requiresGrad = false;
    return this;
  }

  parameters(): Tensor[] {
    return this.namedParameters().map(([, t]) => t);
  }

  /** Number of scalars in all parameters. */
  parameterCount(): number {
    return this.parameters().reduce((n, p) => n + p.size, 0);
  }

  /**
   * Replaces every parameter with the tensor of the same name, uploaded to the parameter's backend
   * in the parameter's storage type (f32, f16 or bf16). Every parameter must be present with its exact
   * shape, and nothing else may be: a partial or mismatched load is an error, never a silently
   * half-initialised model. So is a value a 16-bit parameter cannot hold (f16: |x| ≥ 65520; bf16:
   * within half an ulp of f32's max: it would become infinite); the error names each such tensor
   * and how many values it holds.
   */
  loadStateDict(weights: ReadonlyMap<string, HostTensor>, source = 'state dict'): void {
    const slots = this.parameterSlots();
    const expected = new Set(slots.map((s) => s.name));
    const missing = slots.filter((s) => !weights.has(s.name)).map((s) => s.name);
    const unexpected = [...weights.keys()].filter((name) => !expected.has(name));
    if (missing.length > 0) throw new Error(`${source}: missing ${missing.join(', ')}`);
    if (unexpected.length > 0) throw new Error(`${source}: unexpected ${unexpected.join(', ')}`);
    for (const { name, owner, key } of slots) {
      const old = owner[key] as Tensor;
      const host = weights.get(name)!;
      if (host.shape.length !== old.rank || host.shape.some((d, i) => d !== old.shape[i])) {
        throw new Error(`${source}: ${name} has shape [${host.shape}], the model expects [${old.shape}]`);
      }
    }
    const overflows = slots.flatMap(({ name, owner, key }) => {
      const { dtype } = owner[key] as Tensor;
      const count = overflowCount(weights.get(name)!.data, dtype);
      return count > 0 && isHalfDType(dtype) ? [{ dtype, what: `${name} (${count} value${count === 1 ? '' : 's'})` }] : [];
    });
    if (overflows.length > 0) {
      throw new Error(`${source}: values outside ${rangeOf(overflows[0].dtype)} in ${overflows.map((o) => o.what).join(', ')}: load these weights as f32`);
    }
    for (const { name, owner, key } of slots) {
      const old = owner[key] as Tensor;
      this.swap(owner, key, tensor(asStorageType(weights.get(name)!.data, old.dtype), old.shape, { backend: old.backend }));
    }
  }

  /**
   * Puts `value` (same shape, kept out of any scope) in place of the named parameter, disposing the
   * old one; it stays trainable or frozen as the old one was.
   */
  replaceParameter(name: string, value: Tensor): void {
    const slot = this.parameterSlots().find((s) => s.name === name);
    if (slot === undefined) throw new Error(`no parameter named ${name}`);
    const old = slot.owner[slot.key] as Tensor;
    if (value.rank !== old.rank || value.shape.some((d, i) => d !== old.shape[i])) {
      throw new Error(`${name}: a value of shape [${value.shape}] cannot replace one of shape [${old.shape}]`);
    }
    this.swap(slot.owner, slot.key, value);
  }

  private swap(owner: Record<string, unknown>, key: string, value: Tensor): void {
    const old = owner[key] as Tensor;
    value.requiresGrad = old.requiresGrad;
    old.dispose();
    owner[key] = keep(value);
  }

  train(mode = true): this {
    this.walk((m) => (m.training = mode));
    return this;
  }

  eval(): this {
    return this.train(false);
  }

  dispose(): void {
    for (const p of this.parameters()) p.dispose();
  }

  /** This module and every module inside it, depth first. */
  modules(): Module[] {
    const found: Module[] = [];
    this.walk((m) => found.push(m));
    return found;
  }

  private walk(fn: (m: Module) => void): void {
    fn(this);
    for (const value of Object.values(this)) {
      if (value instanceof Module) value.walk(fn);
      else if (Array.isArray(value)) for (const item of value) if (item instanceof Module) item.walk(fn);
    }
  }

  private parameterSlots(prefix = ''): ParameterSlot[] {
    const slots: ParameterSlot[] = [];
    const owner = this as unknown as Record<string, unknown>;
    for (const [key, value] of Object.entries(this)) {
      if (isTensor(value)) {
        slots.push({ name: prefix + key, owner, key });
      } else if (value instanceof Module) {
        slots.push(...value.parameterSlots(`${prefix}${key}.`));
      } else if (Array.isArray(value)) {
        value.forEach((item, i) => {
          if (item instanceof Module) slots.push(...item.parameterSlots(`${prefix}${key}.${i}.`));
        });
      }
    }
    return slots;
  }
}
