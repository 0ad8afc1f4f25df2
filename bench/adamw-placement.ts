/**
 * AdamW's speed by where its four buffers sit: four fresh buffers of `--mib` MiB each (made one after
 * another, so on lavapipe they lie that far apart), one AdamW over their first `--elements` elements,
 * with the four views starting at the same element (leads 0) against 0, 1, 2 and 3 KiB in
 * (staggered, as src/train/flat-parameters.ts lays its buffers out). Alternating in one process,
 * `--rounds` times, each timed from an idle device to an idle device in wall and process CPU time.
 * Prints a table and, last, one JSON line:
 * {"bench":"adamw-placement","device":…,"elements":…,"sizes":[{"mib":…,"same_ms":…,"staggered_ms":…,"same_cpu_ms":…,"staggered_cpu_ms":…}]}
 *
 *   npx tsx bench/adamw-placement.ts [--mib 52,64,96] [--elements 12865792] [--rounds 5]
 */
import { parseArgs } from 'node:util';
import { printTable, timed } from './harness.js';
import { createBackend, releaseBackend } from '../src/node/backend.js';
import { zeros } from '../src/tensor/create.js';
import { adamwStep } from '../src/tensor/fused.js';
import { keep } from '../src/tensor/scope.js';

const { values } = parseArgs({
  strict: true,
  options: { mib: { type: 'string', default: '52,64,96' }, elements: { type: 'string', default: '12865792' }, rounds: { type: 'string', default: '5' } },
});
const sizes = values.mib.split(',').map(Number);
const elements = Number(values.elements);
const rounds = Number(values.rounds);
if (!Number.isInteger(rounds) || rounds < 1) throw new Error(`--rounds must be a positive integer, got ${values.rounds}`);
const STAGGER = 256; // elements: 1 KiB
for (const mib of sizes) {
  if (!(mib * 2 ** 18 >= elements + 3 * STAGGER)) throw new Error(`--mib ${mib} holds fewer than --elements ${elements} (+ 3 KiB)`);
}

const backend = await createBackend('webgpu');
console.log(`device: ${backend.description}`);
let step = 0;
const median = (xs: number[]) => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)];
const results = [];
for (const mib of sizes) {
  const buffers = [0, 1, 2, 3].map(() => keep(zeros([mib * 2 ** 18], { backend })));
  const run = (leads: number[]) => () => {
    const [p, g, m, v] = buffers.map((b, i) => b.view(leads[i], [elements]));
    adamwStep(p, g, m, v, { lr: 1e-4, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01, step: ++step });
  };
  const same = run([0, 0, 0, 0]);
  const staggered = run([0, 1, 2, 3].map((k) => k * STAGGER));
  await timed(backend, same);
  await timed(backend, staggered);
  const times: { same: { wall: number; cpu: number }[]; staggered: { wall: number; cpu: number }[] } = { same: [], staggered: [] };
  for (let round = 0; round < rounds; round++) {
    // Alternate which goes first, so neither always follows the other.
    if (round % 2 === 0) times.same.push(await timed(backend, same));
    times.staggered.push(await timed(backend, staggered));
    if (round % 2 === 1) times.same.push(await timed(backend, same));
  }
  for (const b of buffers) b.dispose();
  results.push({
    mib,
    same_ms: median(times.same.map((t) => t.wall)),
    staggered_ms: median(times.staggered.map((t) => t.wall)),
    same_cpu_ms: median(times.same.map((t) => t.cpu)),
    staggered_cpu_ms: median(times.staggered.map((t) => t.cpu)),
  });
}
printTable(results.map((r) => ({ 'buffers MiB': r.mib, 'leads 0 ms': r.same_ms, 'staggered ms': r.staggered_ms, 'leads 0 cpu ms': r.same_cpu_ms, 'staggered cpu ms': r.staggered_cpu_ms })));
console.log(JSON.stringify({ bench: 'adamw-placement', device: backend.description, elements, sizes: results }));
releaseBackend();
