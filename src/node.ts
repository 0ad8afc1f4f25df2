/**
 * gpt2-webgpu in Node: the core API (index.ts) and Node's edges — WebGPU through Dawn (the `webgpu`
 * package) with the matmul tuning remembered in the OS cache folder, models from presets, hub repos
 * (downloaded once into the Hugging Face cache) and folders, saving to a folder, LoRA adapter folders
 * (PEFT's layout), and data files.
 *
 * @packageDocumentation
 */
export * from './index.js';
export { createBackend } from './node/backend.js';
export { loadModel, type LoadModelOptions } from './node/load-model.js';
export { saveModel } from './node/weights-folder.js';
export { loadAdapter, saveAdapter } from './node/adapter-folder.js';
export { loadInstructionFile } from './node/instruction-file.js';
