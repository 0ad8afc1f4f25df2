/**
 * The fine-tuning defaults, shared by the command line and the library's fineTune. For a
 * pretrained model the course notebook's lr of 1e-3 is far too high; 5e-5 is the usual
 * fine-tuning rate.
 */
export interface FineTuneSettings {
  epochs: number;
  batchSize: number;
  lr: number;
  weightDecay: number;
  lrSchedule: 'cosine' | 'constant';
  warmupSteps: number;
  gradAccum: number;
  clip: number;
  seed: number;
  shuffle: boolean;
  valFraction: number;
  evalEvery: number;
  maskPrompt: boolean;
}

export const FINE_TUNE_DEFAULTS: Readonly<FineTuneSettings> = {
  epochs: 2,
  batchSize: 8,
  lr: 5e-5,
  weightDecay: 0.01,
  lrSchedule: 'cosine',
  warmupSteps: 10,
  gradAccum: 1,
  clip: 1,
  seed: 0,
  shuffle: true,
  valFraction: 0.1,
  evalEvery: 50,
  maskPrompt: false,
};
