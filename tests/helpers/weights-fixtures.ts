/** Fixtures for the weight-file tests: seeded tensors, fresh temp folders, hand-made safetensors files. */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { onTestFinished } from 'vitest';
import { expectedShapes } from '../../src/gpt/state-dict.js';
import type { GPT2Config } from '../../src/gpt/config.js';
import type { HostTensor, StateDict } from '../../src/gpt/safetensors.js';
import { randomArray } from './random-data.js';

/** A folder under the OS temp dir, removed after the current test. */
export async function freshDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'gpt2-weights-'));
  onTestFinished(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

export function randomTensor(shape: number[], seed: number, stream: number): HostTensor {
  return { shape, data: randomArray(shape.reduce((a, b) => a * b, 1), seed, stream) };
}

/** Every tensor of a GPT-2 with `config`, under the canonical names, with seeded values. */
export function randomGpt2Weights(config: GPT2Config, seed: number): StateDict {
  return new Map([...expectedShapes(config)].map(([name, shape], i) => [name, randomTensor(shape, seed, i)]));
}

/** A safetensors file with exactly the given header (object or raw text) and data section. */
export async function writeRawSafetensors(path: string, header: unknown, data: Uint8Array = new Uint8Array(0)): Promise<void> {
  const json = Buffer.from(typeof header === 'string' ? header : JSON.stringify(header));
  const length = Buffer.alloc(8);
  length.writeBigUInt64LE(BigInt(json.length));
  await writeFile(path, Buffer.concat([length, json, data]));
}

export function expectSameTensors(actual: ReadonlyMap<string, HostTensor>, expected: ReadonlyMap<string, HostTensor>): void {
  const problems: string[] = [];
  if ([...actual.keys()].join() !== [...expected.keys()].join()) problems.push(`names ${[...actual.keys()]} vs ${[...expected.keys()]}`);
  for (const [name, e] of expected) {
    const a = actual.get(name);
    if (a === undefined) continue;
    if (a.shape.join() !== e.shape.join()) problems.push(`${name}: shape [${a.shape}] vs [${e.shape}]`);
    else if (!Buffer.from(a.data.buffer, a.data.byteOffset, a.data.byteLength).equals(Buffer.from(e.data.buffer, e.data.byteOffset, e.data.byteLength))) {
      problems.push(`${name}: values differ`);
    }
  }
  if (problems.length > 0) throw new Error(problems.join('\n'));
}
