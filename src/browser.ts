/**
 * The library in a browser: the core API plus the browser's edges — a WebGPU device from
 * `navigator.gpu`, models from the Hugging Face hub (fetch + Cache API), URLs, picked files or bytes,
 * and saving as Blob downloads.
 */
export * from './index.js';
export { createBackend } from './browser/backend.js';
export { onDeviceLost } from './browser/device.js';
export { downloadBytes, downloadModel, type ModelBytes } from './browser/download.js';
export { largestTensorBytes, loadModel, modelFolderUrl, ModelTooLarge, type BrowserModelSource, type LoadModelOptions } from './browser/load-model.js';
export { pickModelFiles, type PickedModelFiles } from './browser/model-files.js';
