/**
 * Reuses GPU buffers by size bucket, so a steady-state training step or decode step allocates
 * nothing new. Buckets round up to 1/8 of the size's power of two (at most 12.5% slack), and are whole
 * vec4s (16 B multiples), so a kernel reading four elements at a time can run past a ragged end.
 */
export interface PoolStats {
  /** Buffers handed out and not yet returned. */
  liveBuffers: number;
  liveBytes: number;
  /** Buffers ever created by the pool (grows only on a miss). */
  createdBuffers: number;
  pooledBytes: number;
  /** High-water mark of live + pooled bytes. */
  peakBytes: number;
}

export function bucketSize(bytes: number): number {
  const size = Math.max(16, Math.ceil(bytes / 4) * 4);
  if (size <= 4096) return 2 ** Math.ceil(Math.log2(size));
  const step = 2 ** (Math.floor(Math.log2(size)) - 3);
  return Math.ceil(size / step) * step;
}

export class BufferPool {
  private readonly free = new Map<number, GPUBuffer[]>();
  private readonly stats: PoolStats = { liveBuffers: 0, liveBytes: 0, createdBuffers: 0, pooledBytes: 0, peakBytes: 0 };

  constructor(private readonly device: GPUDevice, private readonly usage: GPUBufferUsageFlags, private readonly label: string) {}

  acquire(bytes: number): GPUBuffer {
    const size = bucketSize(bytes);
    let buffer = this.free.get(size)?.pop();
    if (buffer) {
      this.stats.pooledBytes -= size;
    } else {
      buffer = this.device.createBuffer({ size, usage: this.usage, label: this.label });
      this.stats.createdBuffers++;
    }
    this.stats.liveBuffers++;
    this.stats.liveBytes += size;
    this.stats.peakBytes = Math.max(this.stats.peakBytes, this.stats.liveBytes + this.stats.pooledBytes);
    return buffer;
  }

  release(buffer: GPUBuffer): void {
    const list = this.free.get(buffer.size) ?? [];
    list.push(buffer);
    this.free.set(buffer.size, list);
    this.stats.liveBuffers--;
    this.stats.liveBytes -= buffer.size;
    this.stats.pooledBytes += buffer.size;
  }

  /** Gives pooled buffers back to the device (e.g. after loading weights through big temporaries). */
  trim(): void {
    for (const list of this.free.values()) for (const b of list) b.destroy();
    this.free.clear();
    this.stats.pooledBytes = 0;
  }

  snapshot(): PoolStats {
    return { ...this.stats };
  }
}
