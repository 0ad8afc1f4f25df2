/**
 * gpt2-webgpu's runtime-neutral API: GPT-2 on a from-scratch TypeScript tensor engine with WGSL
 * kernels — models from bytes or random weights, the tokenizer and the Alpaca template, greedy or
 * sampled KV-cached generation, and fine-tuning on instructions. Nothing here touches a file
 * system, a network or a process: the Node entry (`node.ts`) and the browser entry (`browser.ts`)
 * add `createBackend`, `loadModel` and saving for their runtime.
 *
 * @packageDocumentation
 */
/// <reference types="@webgpu/types" preserve="true" />

// --- backend ---
export type { Backend } from './tensor/backend.js';
export type { WebGpuBackend } from './kernels/webgpu-backend.js';
export { initBackend, releaseWebGpu as releaseBackend, type BackendChoice, type BackendOptions } from './kernels/select-backend.js';
export { deviceFromAdapter, type AcquiredDevice, type DeviceSource } from './kernels/device.js';
export type { TuneRecord, TuneStore } from './kernels/matmul-tune.js';
export type { GpuOptions } from './kernels/gpu.js';

// --- models ---
export { GPT2, type ModelOptions } from './gpt/model.js';
export type { WeightDType } from './nn/layers.js';
export { configFromJson, configFromText, configToText, hubRepoOf, isPresetName, PRESETS, RANDOM_PRESETS, type GPT2Config, type PresetName } from './gpt/config.js';
export { ModelLoadError, randomModel, type LoadedModel, type RandomModelOptions } from './gpt/load-model.js';
export { modelFromBytes, modelToBytes, withWeightDType, type ConfigSource, type ModelBytesOptions } from './gpt/model-bytes.js';
export { WeightsError } from './gpt/safetensors.js';
export { CONFIG_FILE, WEIGHTS_FILE } from './gpt/state-dict.js';

// --- text ---
export { EOS_ID, Tokenizer } from './gpt/tokenizer.js';
export { alpacaPrompt, DataError, parseInstructionData, type InstructionEntry } from './train/instruction-data.js';

// --- generation ---
export {
  generate, generateBatch, generateBatchStream, generateStream,
  type GenerateOptions, type GenerateResult, type Prompt, type StopReason, type TokenEvent,
} from './gpt/generate.js';

// --- fine-tuning ---
export { fineTune, type FineTuneOptions, type FineTuneResult } from './train/fine-tune.js';
export { TrainingDiverged, type StepRecord } from './train/trainer.js';
export { lossCurveSvg, type LossRecord } from './train/loss-plot.js';
export { addLoRA, BLOCK_LORA_TARGETS, LORA_TARGETS, loraParameters, loraSettings, mergeLoRA, type BlockLoRATarget, type LoRAOptions, type LoRASettings, type LoRATarget } from './gpt/lora.js';
