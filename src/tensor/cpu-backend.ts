/**
 * The CPU reference backend: plain TypeScript over typed arrays. It is the oracle every WebGPU
 * kernel is tested against, and the fallback when no WebGPU adapter exists.
 */
import type { Backend } from './backend.js';
import { adamw } from './cpu/adamw.js';
import { attention, attentionBackward, cachedAttention, slotAttention } from './cpu/attention.js';
import { crossEntropy } from './cpu/cross-entropy.js';
import { cast, fill, random, unary, binary, where } from './cpu/elementwise.js';
import { embedding, embeddingBackward } from './cpu/embedding.js';
import { gelu, geluBackward } from './cpu/gelu.js';
import { layerNorm, layerNormBackward } from './cpu/layernorm.js';
import { pad, permute, slice } from './cpu/layout.js';
import { matmul } from './cpu/matmul.js';
import { reduce } from './cpu/reduce.js';
import { softmax, softmaxBackward } from './cpu/softmax.js';
import { copy, CpuStorage, view } from './cpu/storage.js';
import { widen16 } from './half.js';

export class CpuBackend implements Backend<CpuStorage> {
  readonly name = 'cpu';
  readonly description = 'CPU (TypeScript reference)';

  upload(data: Float32Array | Int32Array | Uint16Array): CpuStorage {
    return new CpuStorage(data.slice());
  }

  read(x: CpuStorage): Promise<Float32Array | Int32Array> {
    return Promise.resolve(x.data instanceof Uint16Array ? widen16(x.data) : x.data.slice());
  }

  release(): void {}
  flush(): void {}
  async sync(): Promise<void> {}
  releaseCached(): void {}
  readonly maxStorageSize = 2 ** 32 - 1;
  readonly viewAlignment = 1;
  view = view;
  copy = copy;

  fill = fill;
  random = random;
  cast = cast;
  unary = unary;
  binary = binary;
  where = where;
  reduce = reduce;
  permute = permute;
  slice = slice;
  pad = pad;
  matmul = matmul;
  layerNorm = layerNorm;
  layerNormBackward = layerNormBackward;
  gelu = gelu;
  geluBackward = geluBackward;
  softmax = softmax;
  softmaxBackward = softmaxBackward;
  attention = attention;
  attentionBackward = attentionBackward;
  cachedAttention = cachedAttention;
  slotAttention = slotAttention;
  embedding = embedding;
  embeddingBackward = embeddingBackward;
  crossEntropy = crossEntropy;
  adamw = adamw;
}
