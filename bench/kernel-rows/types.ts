/** One row of `bench/kernels.ts`: a kernel at one shape, and its rate. */
export interface BenchRow {
  op: string;
  shape: number[];
  ms: number;
  /** Bytes read + written per ms, for memory-bound ops. */
  gbps?: number;
  /** For compute-bound ops (matmul, attention). */
  gflops?: number;
  /** gbps over the measured device-to-device copy bandwidth. */
  fraction_of_copy?: number;
  /** matmul_head: this row's time over the same product's with one row of A. */
  of_one_row?: number;
}
