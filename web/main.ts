/**
 * The web page: load a model, check instruction data, fine-tune with a live loss chart, chat. All
 * engine work goes through the library's browser entry; this file only wires it to the page.
 */
import {
  alpacaPrompt,
  createBackend,
  downloadModel,
  fineTune,
  generateStream,
  loadModel,
  lossCurveSvg,
  modelToBytes,
  onDeviceLost,
  parseInstructionData,
  type Backend,
  type InstructionEntry,
  type LoadedModel,
  type ModelBytes,
  type StepRecord,
} from '../src/browser.js';
import { formatDuration, StepClock } from './eta.js';
import { explainError } from './messages.js';

/**
 * A host copy of the weights after every finished step, so a device lost mid-training still leaves
 * the last finished step downloadable. Reading back costs about a copy of the weights per step, so
 * it is kept only for models up to this size; larger ones are copied when training stops or ends.
 */
const SNAPSHOT_EVERY_STEP_MAX_BYTES = 64 * 2 ** 20;

function element<T extends HTMLElement>(id: string): T {
  const found = document.getElementById(id);
  if (found === null) throw new Error(`the page has no #${id}`);
  return found as T;
}

const ui = {
  adapter: element('adapter'),
  error: element('error'),
  errorTitle: element('error-title'),
  errorMessage: element('error-message'),
  errorClose: element<HTMLButtonElement>('error-close'),
  modelId: element<HTMLInputElement>('model-id'),
  modelLoad: element<HTMLButtonElement>('model-load'),
  modelFiles: element<HTMLInputElement>('model-files'),
  modelFolder: element<HTMLInputElement>('model-folder'),
  modelProgress: element<HTMLProgressElement>('model-progress'),
  modelStatus: element('model-status'),
  dataText: element<HTMLTextAreaElement>('data-text'),
  dataStatus: element('data-status'),
  epochs: element<HTMLInputElement>('epochs'),
  learningRate: element<HTMLInputElement>('learning-rate'),
  batchSize: element<HTMLInputElement>('batch-size'),
  evalEvery: element<HTMLInputElement>('eval-every'),
  seed: element<HTMLInputElement>('seed'),
  train: element<HTMLButtonElement>('train'),
  trainStop: element<HTMLButtonElement>('train-stop'),
  download: element<HTMLButtonElement>('download'),
  trainProgress: element<HTMLProgressElement>('train-progress'),
  trainStatus: element('train-status'),
  lossChart: element('loss-chart'),
  instruction: element<HTMLTextAreaElement>('instruction'),
  instructionInput: element<HTMLTextAreaElement>('instruction-input'),
  temperature: element<HTMLInputElement>('temperature'),
  topK: element<HTMLInputElement>('top-k'),
  topP: element<HTMLInputElement>('top-p'),
  maxNewTokens: element<HTMLInputElement>('max-new-tokens'),
  generate: element<HTMLButtonElement>('generate'),
  generateStop: element<HTMLButtonElement>('generate-stop'),
  response: element('response'),
  generateStatus: element('generate-status'),
};

type Busy = 'idle' | 'loading' | 'training' | 'generating';

const state = {
  backend: null as Backend | null,
  loaded: null as LoadedModel | null,
  entries: null as InstructionEntry[] | null,
  dataSource: 'pasted data',
  busy: 'idle' as Busy,
  deviceLost: false,
  /** The weights of the last finished step (see SNAPSHOT_EVERY_STEP_MAX_BYTES). */
  snapshot: null as { step: number; bytes: ModelBytes } | null,
  stop: null as AbortController | null,
};

function showError(error: unknown): void {
  // After a device loss, the failures it causes (a read that never completes) would only hide its message.
  if (state.deviceLost && !ui.error.hidden) return;
  const { title, message } = explainError(error);
  ui.errorTitle.textContent = title;
  ui.errorMessage.textContent = message;
  ui.error.hidden = false;
}

function setBusy(busy: Busy): void {
  state.busy = busy;
  document.body.dataset.busy = busy;
  refreshButtons();
}

function refreshButtons(): void {
  const idle = state.busy === 'idle';
  const usable = state.loaded !== null && !state.deviceLost;
  ui.modelLoad.disabled = !idle || state.backend === null;
  ui.modelFiles.disabled = !idle || state.backend === null;
  ui.modelFolder.disabled = ui.modelFiles.disabled;
  ui.train.disabled = !idle || !usable || state.entries === null;
  ui.trainStop.disabled = state.busy !== 'training';
  ui.generate.disabled = !idle || !usable;
  ui.generateStop.disabled = state.busy !== 'generating';
  ui.download.disabled = !idle || (state.deviceLost ? state.snapshot === null : state.loaded === null);
}

function numberFrom(input: HTMLInputElement, integer: boolean): number {
  const value = Number(input.value);
  const label = input.closest('label')?.firstChild?.textContent?.trim() ?? input.id;
  if (input.value.trim() === '' || !Number.isFinite(value) || value < 0 || (integer && !Number.isInteger(value))) {
    throw new Error(`${label}: "${input.value}" is not a valid ${integer ? 'whole number' : 'number'}`);
  }
  return value;
}

async function startBackend(): Promise<void> {
  try {
    state.backend = await createBackend('auto');
  } catch (error) {
    showError(error);
    state.backend = await createBackend('cpu');
  }
  if (state.backend.name === 'webgpu') {
    ui.adapter.textContent = `WebGPU adapter: ${state.backend.description}`;
    onDeviceLost((message) => {
      state.stop?.abort();
      const kept = state.snapshot ? ` The weights of step ${state.snapshot.step} are kept: Download model still works.` : '';
      showError(new Error(`GPU device lost: ${message}.${kept}`));
      state.deviceLost = true;
      refreshButtons();
    });
  } else {
    ui.adapter.textContent = 'No WebGPU: running on the CPU backend (slow; tiny models only).';
    showError(new Error('no WebGPU adapter in this browser (navigator.gpu is missing or found no adapter)'));
  }
  refreshButtons();
}

function describeModel(loaded: LoadedModel): string {
  const { n_layer, n_head, n_embd, vocab_size, n_positions } = loaded.config;
  const params = loaded.model.parameters().reduce((sum, p) => sum + p.size, 0);
  const millions = params >= 1e6 ? `${(params / 1e6).toFixed(1)}M` : `${(params / 1e3).toFixed(0)}k`;
  const warning = loaded.nonFinite.length > 0 ? ` Warning: non-finite weights in ${loaded.nonFinite.map((n) => n.name).join(', ')}.` : '';
  return `Loaded ${loaded.source}: ${millions} parameters, ${n_layer} layers, ${n_head} heads, width ${n_embd}, context ${n_positions}, vocabulary ${vocab_size}.${warning}`;
}

async function load(source: Parameters<typeof loadModel>[0], label: string): Promise<void> {
  setBusy('loading');
  ui.modelProgress.hidden = false;
  ui.modelProgress.removeAttribute('value');
  ui.modelStatus.textContent = `Loading ${label}…`;
  try {
    state.loaded?.model.dispose();
    state.loaded = null;
    state.snapshot = null;
    state.loaded = await loadModel(source, {
      onProgress(loaded, total) {
        ui.modelProgress.max = total;
        ui.modelProgress.value = loaded;
        ui.modelStatus.textContent = `Downloading ${label}: ${(loaded / 2 ** 20).toFixed(1)} of ${(total / 2 ** 20).toFixed(1)} MB`;
      },
    });
    ui.modelStatus.textContent = describeModel(state.loaded);
  } catch (error) {
    ui.modelStatus.textContent = 'No model loaded.';
    showError(error);
  } finally {
    ui.modelProgress.hidden = true;
    setBusy('idle');
  }
}

function checkData(): void {
  const text = ui.dataText.value;
  ui.dataStatus.classList.remove('bad');
  state.entries = null;
  if (text.trim() === '') {
    ui.dataStatus.textContent = 'No data yet.';
  } else {
    try {
      state.entries = parseInstructionData(text, state.dataSource);
      ui.dataStatus.textContent = `${state.entries.length} entries from ${state.dataSource}.`;
    } catch (error) {
      ui.dataStatus.textContent = error instanceof Error ? error.message : String(error);
      ui.dataStatus.classList.add('bad');
    }
  }
  refreshButtons();
}

function drawChart(records: readonly StepRecord[]): void {
  ui.lossChart.innerHTML = lossCurveSvg(records);
}

async function train(): Promise<void> {
  const loaded = state.loaded;
  const entries = state.entries;
  if (loaded === null || entries === null) return;
  const options = {
    epochs: numberFrom(ui.epochs, true),
    learningRate: numberFrom(ui.learningRate, false),
    batchSize: numberFrom(ui.batchSize, true),
    evalEvery: numberFrom(ui.evalEvery, true),
    seed: numberFrom(ui.seed, true),
  };
  const weightBytes = loaded.model.parameters().reduce((sum, p) => sum + p.size * 4, 0);
  const snapshotEveryStep = weightBytes <= SNAPSHOT_EVERY_STEP_MAX_BYTES;
  const records: StepRecord[] = [];
  const clock = new StepClock();
  state.stop = new AbortController();
  state.snapshot = null;
  setBusy('training');
  drawChart(records);
  ui.trainStatus.textContent = 'Starting (the first step compiles the kernels)…';
  ui.trainProgress.value = 0;
  let lastStep = 0;
  try {
    const result = await fineTune(loaded.model, entries, {
      ...options,
      signal: state.stop.signal,
      async onStep(record, { totalSteps, weightsStep }) {
        clock.stepFinished();
        records.push({ ...record });
        lastStep = record.step;
        if (snapshotEveryStep) state.snapshot = { step: weightsStep, bytes: await modelToBytes(loaded.model) };
        const left = clock.secondsLeft(totalSteps - record.step);
        ui.trainProgress.max = totalSteps;
        ui.trainProgress.value = record.step;
        ui.trainStatus.textContent = `Step ${record.step}/${totalSteps} · epoch ${record.epoch + 1} · loss ${record.loss.toFixed(4)}`
          + (left === null ? '' : ` · ETA ${formatDuration(left)}`);
        drawChart(records);
      },
      onValidation(valLoss, step) {
        const record = records.find((r) => r.step === step);
        if (record) record.val_loss = valLoss;
        drawChart(records);
      },
    });
    if (!state.deviceLost) state.snapshot = { step: records.at(-1)?.step ?? 0, bytes: await modelToBytes(loaded.model) };
    const ms = clock.msPerStep();
    const last = records.at(-1);
    ui.trainStatus.textContent = `${result.stopped ? 'Stopped' : 'Done'} after ${records.length} steps`
      + (last ? ` · last loss ${last.loss.toFixed(4)}` : '')
      + (last?.val_loss !== undefined ? ` · validation ${last.val_loss.toFixed(4)}` : '')
      + (ms === null ? '' : ` · ${ms.toFixed(0)} ms a step`);
  } catch (error) {
    ui.trainStatus.textContent = `Training failed at step ${lastStep + 1}.`;
    showError(error);
  } finally {
    state.stop = null;
    setBusy('idle');
  }
}

async function chat(): Promise<void> {
  const loaded = state.loaded;
  if (loaded === null) return;
  const options = {
    temperature: numberFrom(ui.temperature, false),
    topK: numberFrom(ui.topK, true),
    topP: numberFrom(ui.topP, false),
    maxNewTokens: numberFrom(ui.maxNewTokens, true),
  };
  const prompt = alpacaPrompt({ instruction: ui.instruction.value, input: ui.instructionInput.value });
  state.stop = new AbortController();
  setBusy('generating');
  ui.response.textContent = '';
  ui.generateStatus.textContent = 'Reading the prompt…';
  const start = performance.now();
  let tokens = 0;
  try {
    for await (const { text } of generateStream(loaded.model, prompt, { ...options, topK: options.topK || undefined, signal: state.stop.signal })) {
      ui.response.textContent += text;
      tokens++;
      const seconds = (performance.now() - start) / 1000;
      ui.generateStatus.textContent = `${tokens} tokens · ${(tokens / seconds).toFixed(1)} tokens/s`;
    }
    ui.generateStatus.textContent += state.stop.signal.aborted ? ' · stopped' : ' · done';
  } catch (error) {
    showError(error);
  } finally {
    state.stop = null;
    setBusy('idle');
  }
}

function download(): void {
  if (state.deviceLost) {
    if (state.snapshot) void downloadModel(state.snapshot.bytes);
  } else if (state.loaded) {
    void downloadModel(state.loaded.model).catch(showError);
  }
}

/** Runs a click handler; what it throws (a bad option value, say) goes to the error banner. */
function onClick(button: HTMLButtonElement, handler: () => unknown): void {
  button.addEventListener('click', () => {
    try {
      const result = handler();
      if (result instanceof Promise) result.catch(showError);
    } catch (error) {
      showError(error);
    }
  });
}

window.addEventListener('error', (event) => showError(event.error ?? event.message));
window.addEventListener('unhandledrejection', (event) => showError(event.reason));
ui.errorClose.addEventListener('click', () => (ui.error.hidden = true));

onClick(ui.modelLoad, () => load(ui.modelId.value.trim(), ui.modelId.value.trim()));
ui.modelFiles.addEventListener('change', () => {
  const files = [...(ui.modelFiles.files ?? [])];
  if (files.length > 0) void load({ files }, files.map((f) => f.name).join(' + '));
});
ui.modelFolder.addEventListener('change', () => {
  const files = [...(ui.modelFolder.files ?? [])];
  if (files.length > 0) void load({ files }, files[0].webkitRelativePath.split('/')[0]);
});

ui.dataText.addEventListener('input', () => {
  state.dataSource = 'pasted data';
  checkData();
});
ui.dataText.addEventListener('dragover', (event) => {
  event.preventDefault();
  ui.dataText.classList.add('dragging');
});
ui.dataText.addEventListener('dragleave', () => ui.dataText.classList.remove('dragging'));
ui.dataText.addEventListener('drop', (event) => {
  event.preventDefault();
  ui.dataText.classList.remove('dragging');
  const file = event.dataTransfer?.files[0];
  if (!file) return;
  void file.text().then((text) => {
    ui.dataText.value = text;
    state.dataSource = file.name;
    checkData();
  }, showError);
});

onClick(ui.train, train);
onClick(ui.trainStop, () => state.stop?.abort());
onClick(ui.download, download);
onClick(ui.generate, chat);
onClick(ui.generateStop, () => state.stop?.abort());

drawChart([]);
setBusy('idle');
void startBackend().catch(showError);
