import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { readSafetensors, writeSafetensors } from '../src/node/safetensors-file.js';
import { parseSafetensors, serializeSafetensors, WeightsError, type HostTensor, type StateDict } from '../src/gpt/safetensors.js';
import { Bfloat16Array } from '../src/tensor/half.js';
import { expectSameTensors, freshDir, randomTensor, writeRawSafetensors } from './helpers/weights-fixtures.js';

function u16Bytes(values: number[]): Uint8Array {
  return new Uint8Array(Uint16Array.from(values).buffer);
}

describe('safetensors F32 round trip', () => {
  it('reads back exactly what it wrote, in order, with aligned data and metadata', async () => {
    const file = join(await freshDir(), 'w.safetensors');
    const special = { shape: [6], data: Float32Array.from([-0, Infinity, -Infinity, NaN, 1e-45, -3.4e38]) };
    const tensors: StateDict = new Map([
      ['b.second', randomTensor([3, 5, 7], 1, 0)],
      ['a.first', randomTensor([11], 1, 1)],
      ['scalar', { shape: [], data: Float32Array.from([42.5]) }],
      ['empty', { shape: [0, 4], data: new Float32Array(0) }],
      ['special', special],
    ]);
    await writeSafetensors(file, tensors, { format: 'pt' });
    expectSameTensors(await readSafetensors(file), tensors);

    const bytes = await readFile(file);
    const headerLength = Number(bytes.readBigUInt64LE(0));
    expect((8 + headerLength) % 8).toBe(0);
    expect((JSON.parse(bytes.subarray(8, 8 + headerLength).toString()) as { __metadata__: unknown }).__metadata__).toEqual({ format: 'pt' });
    expect(await readdir(join(file, '..'))).toEqual(['w.safetensors']);
  });

  it('replaces an existing file, and leaves it intact when a write fails half-way', async () => {
    const dir = await freshDir();
    const file = join(dir, 'w.safetensors');
    const original = new Map([['x', randomTensor([4, 4], 2, 0)]]);
    await writeSafetensors(file, original);
    const before = await readFile(file);

    let reads = 0;
    const failing: HostTensor = {
      shape: [2],
      get data(): Float32Array {
        // The header pass reads it once; the streaming pass fails, as a full disk would.
        if (++reads > 1) throw new Error('disk full');
        return new Float32Array(2);
      },
    };
    await expect(writeSafetensors(file, new Map([['y', randomTensor([64], 2, 1)], ['z', failing]]))).rejects.toThrow('disk full');
    expect((await readFile(file)).equals(before)).toBe(true);
    expect(await readdir(dir)).toEqual(['w.safetensors']);

    const replacement = new Map([['y', randomTensor([3], 2, 2)]]);
    await writeSafetensors(file, replacement);
    expectSameTensors(await readSafetensors(file), replacement);
  });

  it('refuses to write a tensor whose data does not match its shape, naming it', async () => {
    const file = join(await freshDir(), 'w.safetensors');
    const bad = new Map([['h.0.x', { shape: [2, 2], data: new Float32Array(3) }]]);
    await expect(writeSafetensors(file, bad)).rejects.toThrow(`${file}: tensor "h.0.x": shape [2, 2] does not match its 3 values`);
  });
});

describe('safetensors F16 and BF16', () => {
  it('decodes half floats: normals, negatives, subnormals, zeros, infinities, NaN', async () => {
    const file = join(await freshDir(), 'h.safetensors');
    const cases: [number, number][] = [
      [0x3c00, 1], [0xc000, -2], [0x3800, 0.5], [0x3555, 0.333251953125], [0x7bff, 65504], [0xfbff, -65504],
      [0x0001, 2 ** -24], [0x03ff, 1023 * 2 ** -24], [0x8001, -(2 ** -24)], [0x0400, 2 ** -14],
      [0x0000, 0], [0x8000, -0], [0x7c00, Infinity], [0xfc00, -Infinity], [0x7e00, NaN],
    ];
    await writeRawSafetensors(file, { v: { dtype: 'F16', shape: [cases.length], data_offsets: [0, 2 * cases.length] } }, u16Bytes(cases.map(([h]) => h)));
    const v = (await readSafetensors(file)).get('v')!;
    expect(v.shape).toEqual([cases.length]);
    expect(Array.from(v.data)).toEqual(cases.map(([, x]) => x));
    expect(Object.is(v.data[11], -0)).toBe(true);
  });

  it('decodes bfloat16: the top half of a float32', async () => {
    const file = join(await freshDir(), 'b.safetensors');
    const cases: [number, number][] = [
      [0x3f80, 1], [0xc000, -2], [0x4049, 3.140625], [0xbe80, -0.25], [0x7f7f, 3.3895313892515355e38],
      [0x0001, 2 ** -133], [0x8000, -0], [0x7f80, Infinity], [0xff80, -Infinity], [0x7fc0, NaN],
    ];
    await writeRawSafetensors(file, { v: { dtype: 'BF16', shape: [2, 5], data_offsets: [0, 20] } }, u16Bytes(cases.map(([h]) => h)));
    const v = (await readSafetensors(file)).get('v')!;
    expect(v.shape).toEqual([2, 5]);
    expect(Array.from(v.data)).toEqual(cases.map(([, x]) => x));
  });

  it('converts tensors larger than one read chunk, placed after other tensors', async () => {
    const file = join(await freshDir(), 'big.safetensors');
    const n = 2_500_001; // past the 2M-element chunk, odd length
    const halves = Uint16Array.from({ length: n }, (_, i) => 0x3c00 + (i % 1024)); // 1 + (i % 1024) / 1024
    const data = new Uint8Array(6 + 2 * n);
    data.set(u16Bytes([0x3c00, 0x4000, 0x4200]), 0);
    data.set(new Uint8Array(halves.buffer), 6);
    await writeRawSafetensors(file, {
      small: { dtype: 'F16', shape: [3], data_offsets: [0, 6] },
      big: { dtype: 'BF16', shape: [n], data_offsets: [6, 6 + 2 * n] },
    }, data);
    const read = await readSafetensors(file);
    expect(Array.from(read.get('small')!.data)).toEqual([1, 2, 3]);
    const big = read.get('big')!.data;
    const bits = new Uint32Array(big.buffer);
    const wrong = halves.findIndex((h, i) => bits[i] !== h << 16 >>> 0);
    expect(wrong).toBe(-1);
    // Kept 16-bit, the same bits come back as a Bfloat16Array; the F16 tensor still widens.
    const kept = await readSafetensors(file, { keep16: 'bf16' });
    expect(kept.get('big')!.data).toBeInstanceOf(Bfloat16Array);
    expect(kept.get('big')!.data).toEqual(new Bfloat16Array(halves));
    expect(kept.get('small')!.data).toEqual(Float32Array.of(1, 2, 3));
  });

  it('writes a Bfloat16Array as BF16 and an f16 Uint16Array as F16, which read back bit for bit, from a file and from bytes', async () => {
    const file = join(await freshDir(), 'w.safetensors');
    const tensors = new Map([
      ['brain', { shape: [3], data: Bfloat16Array.of(0x3f80, 0xff80, 0x7f7f) }],
      ['half', { shape: [1, 3], data: Uint16Array.of(0x3c00, 0x7bff, 0x0001) }],
      ['full', { shape: [2], data: Float32Array.of(1.5, -2) }],
    ]);
    await writeSafetensors(file, tensors);
    const bytes = new Uint8Array(await readFile(file));
    expect(bytes).toEqual(serializeSafetensors(tensors));
    const headerLength = Number(new DataView(bytes.buffer).getBigUint64(0, true));
    const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + headerLength))) as Record<string, { dtype: string }>;
    expect([header.brain.dtype, header.half.dtype, header.full.dtype]).toEqual(['BF16', 'F16', 'F32']);
    for (const read of [await readSafetensors(file, { keep16: 'bf16' }), parseSafetensors(bytes, file, { keep16: 'bf16' })]) {
      expect(read.get('brain')!.data).toBeInstanceOf(Bfloat16Array);
      expect([...read.get('brain')!.data]).toEqual([0x3f80, 0xff80, 0x7f7f]);
      expect(read.get('half')!.data).toEqual(Float32Array.of(1, 65504, 2 ** -24));
    }
    const asHalf = await readSafetensors(file, { keep16: 'f16' });
    expect(asHalf.get('half')!.data).not.toBeInstanceOf(Bfloat16Array);
    expect([...asHalf.get('half')!.data]).toEqual([0x3c00, 0x7bff, 0x0001]);
    expect(asHalf.get('brain')!.data).toEqual(Float32Array.of(1, -Infinity, 3.3895313892515355e38));
  });
});

describe('safetensors errors name the file and the tensor', () => {
  const entry = (dtype: string, shape: number[], offsets: number[]) => ({ dtype, shape, data_offsets: offsets });

  const cases: [string, unknown, number, string][] = [
    ['unknown dtype', { 'h.0.w': entry('I64', [2], [0, 16]) }, 16, 'tensor "h.0.w": unsupported dtype "I64" (readable: F32, F16, BF16)'],
    ['missing dtype', { 'h.0.w': { shape: [2], data_offsets: [0, 8] } }, 8, 'tensor "h.0.w": dtype undefined is not a string'],
    ['entry not an object', { 'h.0.w': [1, 2] }, 0, 'tensor "h.0.w": header entry is not an object'],
    ['bad shape', { 'h.0.w': entry('F32', [2, -1] as number[], [0, 8]) }, 8, 'tensor "h.0.w": shape [2,-1] is not a list of sizes'],
    ['bad offsets', { 'h.0.w': entry('F32', [2], [8, 0]) }, 8, 'tensor "h.0.w": data_offsets [8,0] is not a pair [begin, end] with begin <= end'],
    ['offsets past the data', { 'h.0.w': entry('F32', [4], [0, 16]) }, 12, 'tensor "h.0.w": data_offsets [0, 16] run past the data section (12 bytes)'],
    ['byte length vs shape', { 'h.0.w': entry('F32', [3], [0, 8]) }, 8, 'tensor "h.0.w": holds 8 bytes, but shape [3] of F32 needs 12'],
    ['overlap', { a: entry('F32', [2], [0, 8]), b: entry('F32', [2], [4, 12]) }, 12, 'tensors "a" [0, 8) and "b" [4, 12) overlap'],
    ['header is a list', [1, 2], 0, 'the header is not a JSON object'],
    ['invalid JSON', '{"a": {"dtype": "F32",', 0, 'the header is not valid JSON'],
  ];
  for (const [label, header, dataBytes, message] of cases) {
    it(label, async () => {
      const file = join(await freshDir(), 'bad.safetensors');
      await writeRawSafetensors(file, header, new Uint8Array(dataBytes));
      const error = await readSafetensors(file).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(WeightsError);
      expect((error as Error).message).toContain(`${file}: ${message}`);
    });
  }

  it('a file shorter than 8 bytes', async () => {
    const file = join(await freshDir(), 'short.safetensors');
    await writeFile(file, Buffer.from([1, 2, 3, 4, 5]));
    await expect(readSafetensors(file)).rejects.toThrow(`${file}: 5 bytes, too short for a safetensors file`);
  });

  it('a header length past the end of the file', async () => {
    const file = join(await freshDir(), 'cut.safetensors');
    const bytes = Buffer.alloc(20);
    bytes.writeBigUInt64LE(1000n);
    await writeFile(file, bytes);
    await expect(readSafetensors(file)).rejects.toThrow(`${file}: header length 1000 runs past the end of the file (20 bytes)`);
  });

  it('a missing file says which', async () => {
    const file = join(await freshDir(), 'absent.safetensors');
    await expect(readSafetensors(file)).rejects.toThrow(file);
  });
});
