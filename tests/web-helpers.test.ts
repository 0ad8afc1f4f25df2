/**
 * The page's helpers: the time left (the rate from the second step on: the first compiles the
 * kernels) and its format; errors a user can cause told in words, by kind.
 */
import { expect, test } from 'vitest';
import { ModelTooLarge } from '../src/browser/load-model.js';
import { DataError, ModelLoadError } from '../src/index.js';
import { formatDuration, StepClock } from '../web/eta.js';
import { explainError } from '../web/messages.js';

test('the rate leaves the first step out and is unknown until a second one has finished', () => {
  const times = [5000, 5300, 5500, 5700];
  let now = 0;
  const clock = new StepClock(() => now);
  now = times[0];
  clock.stepFinished();
  expect(clock.secondsLeft(10)).toBeNull();
  for (const t of times.slice(1)) {
    now = t;
    clock.stepFinished();
  }
  expect(clock.msPerStep()).toBeCloseTo(700 / 3, 9);
  expect(clock.secondsLeft(30)).toBeCloseTo(7, 9);
});

test('durations read as m:ss or h:mm:ss', () => {
  expect([0, 9.4, 75, 600, 3599.6, 3725, 36000].map(formatDuration)).toEqual(['0:00', '0:09', '1:15', '10:00', '1:00:00', '1:02:05', '10:00:00']);
});

test('errors a user can cause get a title by kind and keep their own message', () => {
  const cases: [unknown, string][] = [
    [new Error('no WebGPU adapter in this browser'), 'No WebGPU in this browser.'],
    [new Error('GPU device lost: reason: unknown.'), 'The GPU device was lost.'],
    [new Error('kernel matmul: Out of memory'), 'The GPU ran out of memory.'],
    [new DataError('pasted data: entry 1 (0-based): "output" must be a string, got a number'), 'The instruction data is not valid.'],
    [new ModelTooLarge("the model's largest tensor needs 1200 MB in one GPU buffer; this adapter allows at most 1024 MB"), 'This model does not fit this GPU.'],
    [new ModelLoadError('config.json: not valid JSON'), 'Could not load the model.'],
    [new RangeError('fineTune: epochs must be a positive integer, got 0'), 'Something went wrong.'],
    ['a thrown string', 'Something went wrong.'],
  ];
  for (const [error, title] of cases) {
    const explained = explainError(error);
    expect(explained.title).toBe(title);
    expect(explained.message.split('\n')[0]).toBe(error instanceof Error ? error.message : error);
  }
});
