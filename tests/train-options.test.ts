/** The training command's flags: the demo's and a pretrained model's defaults, checked values, --resume's rule. */
import { describe, expect, it } from 'vitest';
import { HELP, parseTrainOptions, TRAIN_FLAGS, UsageError, type TrainOptions } from '../src/cli/train-options.js';

const parse = (argv: string[]) => parseTrainOptions(argv) as TrainOptions;

describe('parseTrainOptions', () => {
  it('no flags: the demo (demo model, own data set, 20 epochs at a constant lr 3e-3, loss on the responses, its last weights kept)', () => {
    expect(parse([])).toMatchObject({
      model: 'demo', data: 'data/instructions.json', epochs: 20, lr: 3e-3, lrSchedule: 'constant', maskPrompt: true, saveLast: true, batchSize: 8, out: null, resume: null,
    });
  });

  it('a pretrained model: 2 epochs at lr 5e-5 decaying by cosine, the loss on every real token', () => {
    expect(parse(['--model', 'gpt2-medium', '--data', 'my.json'])).toMatchObject({ model: 'gpt2-medium', data: 'my.json', epochs: 2, lr: 5e-5, lrSchedule: 'cosine', maskPrompt: false, saveLast: false });
    expect(parse(['--model', 'gpt2', '--mask-prompt', '--lr', '1e-4', '--epochs', '3'])).toMatchObject({ maskPrompt: true, lr: 1e-4, epochs: 3 });
  });

  const expected = {
    model: 'runs/a', data: 'd.json', out: 'runs/b', epochs: 4, batchSize: 16, lr: 2e-4, weightDecay: 0.1, lrSchedule: 'constant',
    warmupSteps: 0, warmupRatio: null, minLr: null, maxSteps: 100, gradAccum: 4, clip: 0, seed: 42, shuffle: false, valFraction: 0, evalEvery: 25,
    saveSteps: 0, saveLast: false, earlyStoppingPatience: 0, loggingSteps: 10, maskPrompt: true, dropout: 0, maxLength: 512, device: 'cpu',
    loraRank: null, loraAlpha: null, loraDropout: 0, loraTargets: ['c_attn', 'attn.c_proj', 'c_fc', 'mlp.c_proj'], dtype: 'f32', gradientCheckpointing: false, verbose: false,
    resume: null, mergeTo: null, extend: { epochs: 4, maxSteps: 100 },
  };

  it('every flag of the design reads into its field, under its older names too', () => {
    const o = parse([
      '--model', 'runs/a', '--data', 'd.json', '--out', 'runs/b', '--epochs', '4', '--batch-size', '16', '--lr', '2e-4',
      '--weight-decay', '0.1', '--lr-schedule', 'constant', '--warmup-steps', '0', '--max-steps', '100', '--grad-accum', '4',
      '--clip', '0', '--seed', '42', '--no-shuffle', '--val-fraction', '0', '--eval-every', '25', '--mask-prompt',
      '--max-length', '512', '--device', 'cpu',
    ]);
    expect(o).toEqual(expected);
  });

  it("the Hugging Face Trainer's names (kebab case) and the new flags", () => {
    const o = parse([
      '-m', 'runs/a', '--data', 'd.json', '--output-dir', 'runs/b', '--num-train-epochs', '4', '--per-device-train-batch-size', '16',
      '--learning-rate', '2e-4', '--weight-decay', '0.1', '--lr-scheduler-type', 'constant', '--warmup-steps', '0', '--max-steps', '100',
      '--gradient-accumulation-steps', '4', '--max-grad-norm', '0', '--seed', '42', '--no-shuffle', '--val-fraction', '0',
      '--eval-steps', '25', '--mask-prompt', '--max-length', '512', '--device', 'cpu',
    ]);
    expect(o).toEqual(expected);
    expect(parse(['--warmup-ratio', '0.1', '--min-lr', '1e-5', '--save-steps', '50', '--save-last', '--early-stopping-patience', '3', '--logging-steps', '5', '--dropout', '0.1']))
      .toMatchObject({ warmupRatio: 0.1, minLr: 1e-5, saveSteps: 50, saveLast: true, earlyStoppingPatience: 3, loggingSteps: 5, dropout: 0.1 });
  });

  it('--no-mask-prompt turns the demo\'s masking off; with --mask-prompt it is an error', () => {
    expect(parse([]).maskPrompt).toBe(true);
    expect(parse(['--no-mask-prompt']).maskPrompt).toBe(false);
    expect(() => parse(['--mask-prompt', '--no-mask-prompt'])).toThrow(/--mask-prompt or --no-mask-prompt, not both/);
  });

  it('a flag under two of its names is given twice', () => {
    expect(() => parse(['--lr', '1e-4', '--learning-rate', '2e-4'])).toThrow(/--lr and --learning-rate are the same flag, given twice/);
  });

  it('negative numbers parse, then fail the range check by the name written', () => {
    expect(() => parse(['--learning-rate', '-1'])).toThrow(/--learning-rate must be a positive number, got "-1"/);
    expect(() => parse(['--dropout', '-0.1'])).toThrow(/--dropout must be in \[0, 1\), got "-0.1"/);
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

  it('--resume takes every flag from the run, except --device, --merge-to and a longer --epochs or --max-steps', () => {
    expect(parse(['--resume', 'runs/a', '--device', 'cpu'])).toMatchObject({ resume: 'runs/a', device: 'cpu', extend: {} });
    expect(parse(['--resume', 'runs/a', '--epochs', '30'])).toMatchObject({ resume: 'runs/a', extend: { epochs: 30 } });
    expect(parse(['--resume', 'runs/a', '--max-steps', '900'])).toMatchObject({ extend: { maxSteps: 900 } });
    expect(() => parseTrainOptions(['--resume', 'runs/a', '--lr', '3'])).toThrow(/--lr cannot be given with it \(only --epochs, --max-steps, --device, --merge-to and --gradient-checkpointing can\)/);
  });

  it('-h and --help; the help lists every flag of the table that parses them, with a description and the defaults', () => {
    expect(parseTrainOptions(['--help'])).toBe('help');
    expect(parseTrainOptions(['-h'])).toBe('help');
    for (const flag of TRAIN_FLAGS) {
      const line = HELP.split('\n').find((l) => new RegExp(`^ +(-\\w, )?--${flag.name}\\b`).test(l) && (flag.value === undefined || l.includes(flag.value)));
      expect(line, flag.name).toBeDefined();
      expect(line!).toContain(flag.description);
      for (const alias of flag.aliases ?? []) expect(line!).toContain(`--${alias}`);
      if (flag.default !== undefined) expect(line!).toContain(`(default: ${flag.default})`);
    }
    expect(HELP).toMatch(/--learning-rate, --lr <x> +peak learning rate \(default: 0\.00005; 0\.003 for the demo\)/);
  });
});
