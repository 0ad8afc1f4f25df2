/**
 * Timing for benchmarks: warm up, then time each run until the device's queue is empty, and report
 * the median. Results print as a table and, last, one JSON line for machines.
 */
import type { Backend } from '../src/tensor/backend.js';
import { tidy } from '../src/tensor/scope.js';

export interface TimingOptions {
  warmup?: number;
  runs?: number;
}

let runsOverride: number | null = null;

/** Makes every medianMs take this many timed runs, whatever its caller asked (bench/kernels.ts --runs); null restores. */
export function overrideRuns(runs: number | null): void {
  runsOverride = runs;
}

/** Wall and CPU milliseconds of fn, from an idle device to an idle device. */
export async function timed(backend: Backend, fn: () => void): Promise<{ wall: number; cpu: number }> {
  await backend.sync();
  const start = performance.now();
  const cpuStart = process.cpuUsage();
  tidy(fn);
  await backend.sync();
  const cpu = process.cpuUsage(cpuStart);
  return { wall: performance.now() - start, cpu: (cpu.user + cpu.system) / 1000 };
}

/** Median milliseconds of `fn` (which records work on `backend`), waiting for the device each run. */
export async function medianMs(backend: Backend, fn: () => void, { warmup = 2, runs = 5 }: TimingOptions = {}): Promise<number> {
  runs = runsOverride ?? runs;
  for (let i = 0; i < warmup; i++) {
    fn();
    await backend.sync();
  }
  const times: number[] = [];
  for (let i = 0; i < runs; i++) {
    const start = performance.now();
    fn();
    await backend.sync();
    times.push(performance.now() - start);
  }
  times.sort((a, b) => a - b);
  return times[Math.floor(times.length / 2)];
}

export function printTable(rows: Record<string, string | number>[]): void {
  if (rows.length === 0) return;
  const columns = Object.keys(rows[0]);
  const cells = rows.map((r) => columns.map((c) => format(r[c])));
  const widths = columns.map((c, i) => Math.max(c.length, ...cells.map((row) => row[i].length)));
  const line = (values: string[]) => '| ' + values.map((v, i) => v.padStart(widths[i])).join(' | ') + ' |';
  console.log(line(columns));
  console.log('|' + widths.map((w) => '-'.repeat(w + 1) + ':').join('|') + '|');
  for (const row of cells) console.log(line(row));
}

function format(value: string | number | undefined): string {
  if (value === undefined) return '';
  if (typeof value === 'string') return value;
  if (Number.isInteger(value)) return String(value);
  return Math.abs(value) >= 100 ? value.toFixed(0) : Math.abs(value) >= 1 ? value.toFixed(2) : value.toPrecision(3);
}
