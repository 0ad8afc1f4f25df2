/** The training command's flags: the demo's and a pretrained model's defaults, checked values, --resume's rule. */
import { describe, expect, it } from 'vitest';
import { parseTrainOptions, UsageError, type TrainOptions } from '../src/cli/train-options.js';

const parse = (argv: string[]) => parseTrainOptions(argv) as TrainOptions;

describe('parseTrainOptions', () => {
  it('no flags: the demo (demo model, own data set, 20 epochs at a constant lr 3e-3, loss on the responses)', () => {
    expect(parse([])).toMatchObject({
      model: 'demo', data: 'data/instructions.json', epochs: 20, lr: 3e-3, lrSchedule: 'constant', maskPrompt: true, batchSize: 8, out: null, resume: null,
    });
  });

  it('a pretrained model: 2 epochs at lr 5e-5 decaying by cosine, the loss on every real token', () => {
    expect(parse(['--model', 'gpt2-medium', '--data', 'my.json'])).toMatchObject({ model: 'gpt2-medium', data: 'my.json', epochs: 2, lr: 5e-5, lrSchedule: 'cosine', maskPrompt: false });
    expect(parse(['--model', 'gpt2', '--mask-prompt', '--lr', '1e-4', '--epochs', '3'])).toMatchObject({ maskPrompt: true, lr: 1e-4, epochs: 3 });
  });

  it('every flag of the design reads into its field', () => {
    const o = parse([
      '--model', 'runs/a', '--data', 'd.json', '--out', 'runs/b', '--epochs', '4', '--batch-size', '16', '--lr', '2e-4',
      '--weight-decay', '0.1', '--lr-schedule', 'constant', '--warmup-steps', '0', '--max-steps', '100', '--grad-accum', '4',
      '--clip', '0', '--seed', '42', '--no-shuffle', '--val-fraction', '0', '--eval-every', '25', '--mask-prompt',
      '--max-length', '512', '--device', 'cpu',
    ]);
    expect(o).toEqual({
      model: 'runs/a', data: 'd.json', out: 'runs/b', epochs: 4, batchSize: 16, lr: 2e-4, weightDecay: 0.1, lrSchedule: 'constant',
      warmupSteps: 0, maxSteps: 100, gradAccum: 4, clip: 0, seed: 42, shuffle: false, valFraction: 0, evalEvery: 25,
      maskPrompt: true, maxLength: 512, device: 'cpu', resume: null,
    });
  });

  it('rejects bad values with the flag and the value in the message', () => {
    const cases: [string[], RegExp][] = [
      [['--batch-size', '0'], /--batch-size must be a positive integer, got "0"/],
      [['--lr=-1'], /--lr must be a positive number, got "-1"/],
      [['--val-fraction', '1'], /--val-fraction must be in \[0, 1\), got "1"/],
      [['--lr-schedule', 'linear'], /--lr-schedule must be cosine or constant, got "linear"/],
      [['--device', 'tpu'], /--device must be webgpu, cpu or auto, got "tpu"/],
      [['--max-length', '1'], /--max-length must be an integer ≥ 2, got "1"/],
      [['--epochs', '2.5'], /--epochs must be a positive integer, got "2.5"/],
      [['--unknown'], /Unknown option '--unknown'/],
      [['extra'], /Unexpected argument 'extra'/],
    ];
    for (const [argv, message] of cases) expect(() => parseTrainOptions(argv), argv.join(' ')).toThrow(message);
    expect(() => parseTrainOptions(['--epochs', '0'])).toThrow(UsageError);
  });

  it('--resume takes every flag from the run, except --device', () => {
    expect(parse(['--resume', 'runs/a', '--device', 'cpu'])).toMatchObject({ resume: 'runs/a', device: 'cpu' });
    expect(() => parseTrainOptions(['--resume', 'runs/a', '--epochs', '3'])).toThrow(/--epochs cannot be given with it \(only --device can\)/);
  });

  it('--help', () => {
    expect(parseTrainOptions(['--help'])).toBe('help');
  });
});
