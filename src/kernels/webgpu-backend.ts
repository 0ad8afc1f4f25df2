/** The WebGPU backend: storage is pooled GPU buffers; every op records dispatches on one Gpu. */
import type { Backend } from '../tensor/backend.js';
import { adamw } from './adamw.js';
import { attention, attentionBackward } from './attention.js';
import { cachedAttention, slotAttention } from './attention-cache.js';
import { crossEntropy } from './cross-entropy.js';
import { binary, cast, fill, random, unary, where } from './elementwise.js';
import { embedding, embeddingBackward } from './embedding.js';
import { gelu, geluBackward } from './gelu.js';
import type { Gpu, GpuStorage } from './gpu.js';
import { layerNorm, layerNormBackward } from './layernorm.js';
import { pad, permute, slice } from './layout.js';
import { matmul } from './matmul-tune.js';
import { reduce } from './reduce.js';
import { softmax, softmaxBackward } from './softmax.js';

export type WebGpuBackend = Backend<GpuStorage> & { readonly name: 'webgpu'; readonly gpu: Gpu };

/** Binds a kernel family's function to one Gpu. */
function on<A extends unknown[], R>(gpu: Gpu, fn: (gpu: Gpu, ...args: A) => R): (...args: A) => R {
  return (...args: A) => fn(gpu, ...args);
}

export function createWebGpuBackend(gpu: Gpu): WebGpuBackend {
  return {
    name: 'webgpu',
    description: gpu.description,
    gpu,
    upload: (data) => gpu.upload(data),
    read: (x) => gpu.read(x),
    release: (x) => gpu.release(x),
    flush: () => gpu.flush(),
    sync: () => gpu.sync(),
    releaseCached: () => gpu.trimPool(),
    maxStorageSize: gpu.maxStorageSize,
    viewAlignment: gpu.bindingAlignment / 4,
    view: (base, offset, size) => gpu.viewOf(base, offset, size),
    copy: (src, dst) => gpu.copyStorage(src, dst),
    fill: on(gpu, fill),
    random: on(gpu, random),
    cast: on(gpu, cast),
    unary: on(gpu, unary),
    binary: on(gpu, binary),
    where: on(gpu, where),
    reduce: on(gpu, reduce),
    permute: on(gpu, permute),
    slice: on(gpu, slice),
    pad: on(gpu, pad),
    matmul: on(gpu, matmul),
    layerNorm: on(gpu, layerNorm),
    layerNormBackward: on(gpu, layerNormBackward),
    gelu: on(gpu, gelu),
    geluBackward: on(gpu, geluBackward),
    softmax: on(gpu, softmax),
    softmaxBackward: on(gpu, softmaxBackward),
    attention: on(gpu, attention),
    attentionBackward: on(gpu, attentionBackward),
    cachedAttention: on(gpu, cachedAttention),
    slotAttention: on(gpu, slotAttention),
    embedding: on(gpu, embedding),
    embeddingBackward: on(gpu, embeddingBackward),
    crossEntropy: on(gpu, crossEntropy),
    adamw: on(gpu, adamw),
  };
}
