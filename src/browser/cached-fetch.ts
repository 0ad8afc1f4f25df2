/**
 * Downloads for the browser: a file's bytes through `fetch`, with progress, kept in the Cache API so
 * a reload does not download it again. A file is stored only once complete, so an interrupted download
 * never leaves a cached file that looks whole. Without the Cache API (an insecure context) or when its
 * quota refuses a large file, the bytes are used and simply not kept.
 */
const CACHE_NAME = 'gpt2-webgpu-models';

export type ByteProgress = (loadedBytes: number, totalBytes: number) => void;

async function openCache(): Promise<Cache | null> {
  if (typeof caches === 'undefined') return null;
  try {
    return await caches.open(CACHE_NAME);
  } catch {
    return null; // storage disabled (private windows in some browsers)
  }
}

async function readBody(response: Response, url: string, onProgress?: ByteProgress): Promise<Uint8Array> {
  const total = Number(response.headers.get('content-length') ?? 0);
  if (response.body === null) return new Uint8Array(await response.arrayBuffer());
  const chunks: Uint8Array[] = [];
  let loaded = 0;
  const reader = response.body.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    chunks.push(value);
    loaded += value.byteLength;
    onProgress?.(loaded, Math.max(total, loaded));
  }
  if (total > 0 && loaded !== total) throw new Error(`${url}: the download ended after ${loaded} of ${total} bytes`);
  const bytes = new Uint8Array(loaded);
  let offset = 0;
  for (const chunk of chunks) {
    bytes.set(chunk, offset);
    offset += chunk.byteLength;
  }
  return bytes;
}

/** The bytes at `url`, from the cache when there, else downloaded (and then cached). */
export async function fetchCached(url: string, onProgress?: ByteProgress): Promise<Uint8Array> {
  const cache = await openCache();
  const hit = await cache?.match(url);
  if (hit) {
    const bytes = new Uint8Array(await hit.arrayBuffer());
    onProgress?.(bytes.byteLength, bytes.byteLength);
    return bytes;
  }
  let response: Response;
  try {
    response = await fetch(url);
  } catch (error) {
    throw new Error(`${url}: the download failed (${(error as Error).message}); check the connection`, { cause: error });
  }
  if (!response.ok) {
    const hint = response.status === 404 ? ' (no such file: check the model name)' : response.status === 401 ? ' (a private or gated repo)' : '';
    throw new Error(`${url}: HTTP ${response.status}${hint}`);
  }
  const bytes = await readBody(response, url, onProgress);
  try {
    await cache?.put(url, new Response(bytes as BlobPart, { headers: { 'content-length': String(bytes.byteLength) } }));
  } catch (error) {
    console.warn(`gpt2-webgpu: ${url} was not cached (${(error as Error).message})`);
  }
  return bytes;
}
