/**
 * Where a `--model` spec's weights come from: a small preset trained from random weights, a local
 * folder, or a Hugging Face hub repo (`gpt2` … `gpt2-xl` are openai-community's).
 *
 * Hub repos go into the standard Hugging Face cache, laid out as Python's huggingface_hub lays it
 * out — `models--owner--name/blobs/<etag>`, `snapshots/<commit>/<file>` → relative symlink to the
 * blob, `refs/main` holding the commit — so a model fetched from Python is found here and the other
 * way round. The cache is looked at first: once both files are there no request is made, which is
 * what makes later runs work offline.
 *
 * @huggingface/hub does the transfer: `downloadFileToCacheDir` writes `blobs/<etag>.incomplete` and
 * renames it only once complete, so an interrupted download never leaves a file that looks whole.
 * Two things it does not do are done here: it names the snapshot after the commit that last touched
 * the file unless given a commit, and it never writes `refs/main` — so the head commit is resolved
 * first and the ref written last, after both files are in place.
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { mkdir, realpath, rm, stat } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { downloadFileToCacheDir, getHFHubCachePath, getRepoFolderName, HubApiError, modelInfo, pathsInfo } from '@huggingface/hub';
import { hubRepoOf, isPresetName, isRandomPreset, PRESETS, type GPT2Config, type RandomPreset } from '../gpt/config.js';
import { CONFIG_FILE, WEIGHTS_FILE } from '../gpt/state-dict.js';
import { atomicWrite } from './atomic-write.js';
import { modelFolderProblem } from './weights-folder.js';
const FILES = [CONFIG_FILE, WEIGHTS_FILE];

export type ModelSource =
  | { kind: 'preset-random'; name: RandomPreset; config: GPT2Config }
  | { kind: 'folder'; folder: string }
  | { kind: 'hub'; repo: string };

export type ResolvedModel = Exclude<ModelSource, { kind: 'hub' }>;

export interface HubOptions {
  /** Default: $HF_ENDPOINT, else https://huggingface.co. */
  hubUrl?: string;
  /** Default: $HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub (as huggingface_hub). */
  cacheDir?: string;
  /** Never touch the network. Default: $HF_HUB_OFFLINE. */
  offline?: boolean;
  /** Called as bytes arrive; default: a progress bar on stderr. */
  onProgress?: (file: string, bytes: number, total: number) => void;
}

/**
 * Classifies a spec without touching the network. Order: presets (tiny and demo random, the others
 * openai-community's repos), an existing folder (one named like a preset is reached as ./name), owner/name.
 */
export function resolveModelSource(spec: string): ModelSource {
  if (isRandomPreset(spec)) return { kind: 'preset-random', name: spec, config: { ...PRESETS[spec] } };
  if (isPresetName(spec)) return { kind: 'hub', repo: hubRepoOf(spec)! };
  if (existsSync(spec)) {
    const folder = resolve(spec);
    if (!statSync(folder).isDirectory()) {
      throw new Error(`${folder} is a file: pass the folder that holds ${CONFIG_FILE} + ${WEIGHTS_FILE}`);
    }
    const problem = modelFolderProblem(folder);
    if (problem !== null) throw new Error(problem);
    return { kind: 'folder', folder };
  }
  const repo = hubRepoOf(spec);
  if (repo !== null) return { kind: 'hub', repo };
  throw new Error(
    `--model ${spec}: not a preset (${Object.keys(PRESETS).join(', ')}), an existing folder, or a hub repo owner/name`,
  );
}

/** The spec as a random-weight preset or a folder holding config.json + model.safetensors. */
export async function resolveModel(spec: string, options: HubOptions = {}): Promise<ResolvedModel> {
  const source = resolveModelSource(spec);
  return source.kind === 'hub' ? { kind: 'folder', folder: await fetchHubModel(source.repo, options) } : source;
}

/** The cached snapshot folder of `repo`, downloading config.json and model.safetensors if needed. */
export async function fetchHubModel(repo: string, options: HubOptions = {}): Promise<string> {
  const cacheDir = options.cacheDir ?? getHFHubCachePath();
  const storage = join(cacheDir, getRepoFolderName({ type: 'model', name: repo }));
  const cached = cachedSnapshot(storage);
  if (cached !== null) return cached;

  const hubUrl = options.hubUrl ?? process.env.HF_ENDPOINT ?? 'https://huggingface.co';
  const unreachable = (reason: string) => new Error(notCachedMessage(repo, hubUrl, storage, reason));
  if (options.offline ?? isSet(process.env.HF_HUB_OFFLINE)) throw unreachable('offline mode');

  const progress = { file: '', bytes: 0, total: 0 };
  const report = options.onProgress ?? progressBar(repo);
  const access = {
    hubUrl,
    accessToken: process.env.HF_TOKEN,
    fetch: countingFetch((n) => {
      progress.bytes += n;
      if (progress.file !== '') report(progress.file, Math.min(progress.bytes, progress.total), progress.total);
    }),
  };

  let commit: string;
  let sizes: Map<string, number>;
  try {
    commit = (await modelInfo({ name: repo, additionalFields: ['sha'], revision: 'main', ...access })).sha;
    const infos = await pathsInfo({ repo, paths: FILES, revision: commit, ...access });
    sizes = new Map(infos.map((p) => [p.path, p.lfs?.size ?? p.size]));
  } catch (e) {
    if (!(e instanceof HubApiError)) throw unreachable(reasonOf(e));
    const denied = e.statusCode === 401 || e.statusCode === 403 || e.statusCode === 404;
    throw new Error(
      denied
        ? `${repo}: no such repo on ${hubUrl} (HTTP ${e.statusCode}; a private or gated one needs HF_TOKEN), and no local folder of that name`
        : `${repo}: the hub at ${hubUrl} answered HTTP ${e.statusCode}: ${e.message}`,
      { cause: e },
    );
  }
  const missing = FILES.filter((f) => !sizes.has(f));
  if (missing.length > 0) throw new Error(`${repo} on ${hubUrl} has no ${missing.join(' or ')} (only safetensors weights are read)`);

  for (const file of FILES) {
    const total = sizes.get(file)!;
    Object.assign(progress, { file, bytes: 0, total });
    let path: string;
    try {
      path = await downloadFileToCacheDir({ repo, path: file, revision: commit, cacheDir, ...access });
    } catch (e) {
      throw new Error(
        `downloading ${file} of ${repo} from ${hubUrl} failed (${reasonOf(e)}); run again to retry ` +
          `(a partial download is never taken for the real file)`,
        { cause: e },
      );
    }
    const got = (await stat(path)).size;
    if (got !== total) {
      // A truncated transfer that the HTTP layer did not notice: remove it so it is never taken as whole.
      await rm(await realpath(path), { force: true });
      await rm(path, { force: true });
      throw new Error(`downloading ${file} of ${repo} gave ${got} bytes instead of ${total}; run again to retry`);
    }
    report(file, total, total);
    progress.file = '';
  }
  await mkdir(join(storage, 'refs'), { recursive: true });
  await atomicWrite(join(storage, 'refs', 'main'), (fh) => fh.writeFile(commit));
  return join(storage, 'snapshots', commit);
}

/** The snapshot refs/main names, when it holds both files (a dangling link does not count). */
function cachedSnapshot(storage: string): string | null {
  const ref = join(storage, 'refs', 'main');
  if (!existsSync(ref)) return null;
  const snapshot = join(storage, 'snapshots', readFileSync(ref, 'utf8').trim());
  return FILES.every((f) => existsSync(join(snapshot, f))) ? snapshot : null;
}

function isSet(flag: string | undefined): boolean {
  return flag !== undefined && ['1', 'true', 'yes', 'on'].includes(flag.toLowerCase());
}

/** fetch's own message ("fetch failed", "terminated") says little; the socket error under it says more. */
function reasonOf(e: unknown): string {
  const message = e instanceof Error ? e.message : String(e);
  const cause = e instanceof Error ? (e.cause as { code?: string; message?: string } | undefined) : undefined;
  const detail = cause?.code ?? cause?.message;
  return detail ? `${message}: ${detail}` : message;
}

function notCachedMessage(repo: string, hubUrl: string, storage: string, reason: string): string {
  return [
    `Cannot download ${repo} (${reason}) and it is not in the Hugging Face cache (${storage}).`,
    `Either download ${FILES.join(' and ')} from ${hubUrl}/${repo}/tree/main into a folder and pass that folder with --model,`,
    `or put them into that cache where the hub can be reached (then copy the cache folder over if needed):`,
    `  hf download ${repo} ${FILES.join(' ')} --cache-dir ${dirname(storage)}`,
  ].join('\n');
}

/** A fetch that reports the bytes of every response body it passes on. */
function countingFetch(onBytes: (n: number) => void): typeof fetch {
  return async (input, init) => {
    const response = await fetch(input, init);
    if (response.body === null) return response;
    const counter = new TransformStream<Uint8Array, Uint8Array>({
      transform(chunk, controller) {
        onBytes(chunk.byteLength);
        controller.enqueue(chunk);
      },
    });
    const counted = new Response(response.body.pipeThrough(counter), response);
    // The library compares the final URL (after redirects) with the hub's to pick its download URL.
    Object.defineProperty(counted, 'url', { value: response.url });
    return counted;
  };
}

const MB = 1e6;

/** On a terminal, a bar redrawn at most 10 times a second; elsewhere, one line per 10%. */
function progressBar(repo: string, stream: NodeJS.WriteStream = process.stderr): NonNullable<HubOptions['onProgress']> {
  let file = '';
  let started = 0;
  let drawn = 0;
  let decile = -1;
  return (name, bytes, total) => {
    const now = performance.now();
    if (name !== file) [file, started, drawn, decile] = [name, now, 0, -1];
    const fraction = total > 0 ? bytes / total : 1;
    const done = fraction >= 1;
    if (decile === 10) return;
    const seconds = Math.max((now - started) / 1000, 1e-3);
    const width = 24;
    const bar = '█'.repeat(Math.round(width * fraction)).padEnd(width, '░');
    const line =
      `${repo}/${name} ${bar} ${Math.floor(100 * fraction)}% ${(bytes / MB).toFixed(1)}/${(total / MB).toFixed(1)} MB ` +
      `${(bytes / MB / seconds).toFixed(1)} MB/s`;
    if (stream.isTTY) {
      if (!done && now - drawn < 100) return;
      drawn = now;
      stream.write(`\r${line}\x1b[K${done ? '\n' : ''}`);
    } else {
      if (Math.floor(10 * fraction) <= decile) return;
      stream.write(line + '\n');
    }
    decile = done ? 10 : Math.floor(10 * fraction);
  };
}
