/**
 * A page that runs the library's browser entry for tests: load a model from a URL, fine-tune a few
 * steps, generate greedily. The Node side of a test runs the same calls through the Node entry.
 */
import { createBackend, fineTune, generate, loadModel, parseInstructionData, type FineTuneOptions } from '../../src/browser.js';

export interface LoadReport {
  source: string;
  nEmbd: number;
  progress: [number, number, string][];
}

export interface EngineRun {
  backend: string;
  losses: number[];
  ids: number[];
}

declare global {
  interface Window {
    trainAndGenerate(modelUrl: string, data: string, options: FineTuneOptions, prompt: string, maxNewTokens: number): Promise<EngineRun>;
    loadFrom(source: string): Promise<LoadReport>;
    stepTimes(modelUrl: string, data: string, options: FineTuneOptions): Promise<{ adapter: string; ms: number[] }>;
  }
}

window.trainAndGenerate = async (modelUrl, data, options, prompt, maxNewTokens) => {
  const backend = await createBackend('webgpu');
  const { model } = await loadModel(modelUrl, { backend });
  const { records } = await fineTune(model, parseInstructionData(data, 'data.json'), options);
  const { ids } = await generate(model, prompt, { maxNewTokens });
  return { backend: backend.name, losses: records.map((r) => r.loss), ids };
};

/** Milliseconds between consecutive steps' completions (bench/browser-step.ts). */
window.stepTimes = async (modelUrl, data, options) => {
  const backend = await createBackend('webgpu');
  const { model } = await loadModel(modelUrl, { backend });
  const ends: number[] = [performance.now()];
  await fineTune(model, parseInstructionData(data, 'data.json'), { ...options, onStep: () => void ends.push(performance.now()) });
  return { adapter: backend.description, ms: ends.slice(1).map((t, i) => t - ends[i]) };
};

/** Loads a model by name or URL (browser-load.test.ts): where it came from and the progress reported. */
window.loadFrom = async (source) => {
  const progress: [number, number, string][] = [];
  const loaded = await loadModel(source, { backend: await createBackend('webgpu'), onProgress: (done, total, file) => void progress.push([done, total, file]) });
  loaded.model.dispose();
  return { source: loaded.source, nEmbd: loaded.config.n_embd, progress };
};
