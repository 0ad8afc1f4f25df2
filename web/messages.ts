/**
 * Errors a user can cause, in words for the page: what happened and what to do. Anything else keeps
 * its own message, so nothing ends as a blank page or a console-only error.
 */
export interface PageMessage {
  title: string;
  message: string;
}

export function explainError(error: unknown): PageMessage {
  const text = error instanceof Error ? error.message : String(error);
  const name = error instanceof Error ? error.name : '';
  if (/no WebGPU|navigator\.gpu/i.test(text)) {
    return { title: 'No WebGPU in this browser.', message: `${text}\nUse a recent Chrome or Edge (WebGPU on), or try a tiny model on the CPU backend.` };
  }
  if (/device (was )?lost|GPUDeviceLost|device is lost|destroyed/i.test(text)) {
    return { title: 'The GPU device was lost.', message: `${text}\nReload the page to get a new device.` };
  }
  if (/out of memory|OutOfMemory|allocation failed/i.test(text)) {
    return { title: 'The GPU ran out of memory.', message: `${text}\nTry a smaller model or a smaller batch size.` };
  }
  if (name === 'DataError') return { title: 'The instruction data is not valid.', message: text };
  if (name === 'ModelTooLarge') return { title: 'This model does not fit this GPU.', message: text };
  if (name === 'ModelLoadError' || name === 'WeightsError') return { title: 'Could not load the model.', message: text };
  return { title: 'Something went wrong.', message: text };
}
