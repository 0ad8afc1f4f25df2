/**
 * The hub download against a local imitation of the endpoints @huggingface/hub calls:
 * GET /api/models/{repo}/revision/{rev} (the head commit), POST /api/models/{repo}/paths-info/{rev}
 * (oids, LFS sha256, sizes), and GET /{repo}/resolve/{rev}/{file} (a `Range: bytes=0-0` probe,
 * then the whole file).
 */
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readdir, readFile, readlink, symlink, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { loadGpt2Weights, saveGpt2Weights } from '../src/node/weights-folder.js';
import { PRESETS } from '../src/gpt/config.js';
import { resolveModel, resolveModelSource } from '../src/node/hub.js';
import { expectSameTensors, freshDir, randomGpt2Weights } from './helpers/weights-fixtures.js';

const REPO = 'test-org/tiny-gpt2';
const COMMIT = 'a'.repeat(40);
/** paths-info's lastCommit is the commit that last touched a file, which is not the head: the snapshot must be named after the head. */
const OLDER_COMMIT = 'b'.repeat(40);
const STORAGE = 'models--test-org--tiny-gpt2';

interface FakeHub {
  url: string;
  requests: string[];
  /** The next full GET of this file sends half of it and then drops the connection. */
  cutNext: string | null;
  stop(): Promise<void>;
}

function gitBlobSha1(bytes: Buffer): string {
  return createHash('sha1').update(`blob ${bytes.length}\0`).update(bytes).digest('hex');
}

async function startFakeHub(files: Map<string, Buffer>): Promise<FakeHub> {
  const describeFile = (path: string) => {
    const bytes = files.get(path)!;
    const lfs = path.endsWith('.safetensors') ? { oid: createHash('sha256').update(bytes).digest('hex'), size: bytes.length, pointerSize: 134 } : undefined;
    return { path, type: 'file', oid: gitBlobSha1(bytes), size: bytes.length, lfs, lastCommit: { id: OLDER_COMMIT, title: 'upload', date: '2024-01-01T00:00:00Z' } };
  };
  const hub: FakeHub = { url: '', requests: [], cutNext: null, stop: async () => {} };
  const server: Server = createServer((req, res) => {
    const url = new URL(req.url!, 'http://x');
    hub.requests.push(`${req.method} ${url.pathname}${req.headers.range ? ` ${req.headers.range}` : ''}`);
    const json = (status: number, body: unknown) => res.writeHead(status, { 'Content-Type': 'application/json' }).end(JSON.stringify(body));
    if (req.method === 'GET' && url.pathname === `/api/models/${REPO}/revision/main`) {
      return json(200, { _id: '1', id: REPO, sha: COMMIT, private: false, gated: false, downloads: 0, likes: 0, lastModified: '2024-01-01T00:00:00Z' });
    }
    if (req.method === 'POST' && url.pathname === `/api/models/${REPO}/paths-info/${COMMIT}`) {
      let body = '';
      req.on('data', (c) => (body += c)).on('end', () => json(200, (JSON.parse(body) as { paths: string[] }).paths.filter((p) => files.has(p)).map(describeFile)));
      return;
    }
    const file = url.pathname.match(new RegExp(`^/${REPO}/resolve/(?:main|${COMMIT})/(.+)$`))?.[1];
    if (req.method === 'GET' && file !== undefined && files.has(file)) {
      const bytes = files.get(file)!;
      const info = describeFile(file);
      const headers = { 'X-Repo-Commit': COMMIT, ETag: `"${info.lfs?.oid ?? info.oid}"`, 'Accept-Ranges': 'bytes' };
      if (req.headers.range === 'bytes=0-0') {
        return res.writeHead(206, { ...headers, 'Content-Range': `bytes 0-0/${bytes.length}`, 'Content-Length': '1' }).end(bytes.subarray(0, 1));
      }
      res.writeHead(200, { ...headers, 'Content-Length': String(bytes.length) });
      if (hub.cutNext === file) {
        hub.cutNext = null;
        res.write(bytes.subarray(0, bytes.length >> 1), () => res.socket?.destroy());
        return;
      }
      return res.end(bytes);
    }
    json(404, { error: 'Repository not found' });
  });
  await new Promise<void>((ready) => server.listen(0, '127.0.0.1', ready));
  hub.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  hub.stop = () => {
    server.closeAllConnections();
    return new Promise((done) => server.close(() => done()));
  };
  return hub;
}

/** A tiny GPT-2 written by our own writer, served by a fake hub. */
async function tinyModelOnFakeHub() {
  const source = await freshDir();
  const config = PRESETS.tiny;
  const weights = randomGpt2Weights(config, 21);
  await saveGpt2Weights(source, config, weights);
  const files = new Map<string, Buffer>();
  for (const name of ['config.json', 'model.safetensors']) files.set(name, await readFile(join(source, name)));
  const hub = await startFakeHub(files);
  onFinished.push(() => hub.stop());
  return { hub, weights, files };
}

const onFinished: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const f of onFinished.splice(0)) await f();
  vi.unstubAllEnvs();
  vi.restoreAllMocks();
});

const quiet = () => {};

/** A hub URL where nothing listens: a port that was free a moment ago. */
async function unreachableHubUrl(): Promise<string> {
  const server = createServer();
  await new Promise<void>((ready) => server.listen(0, '127.0.0.1', ready));
  const { port } = server.address() as AddressInfo;
  await new Promise((done) => server.close(done));
  return `http://127.0.0.1:${port}`;
}

describe('hub download into the Hugging Face cache', () => {
  it('downloads once in the layout of Python huggingface_hub, then serves from the cache offline', async () => {
    const { hub, weights, files } = await tinyModelOnFakeHub();
    const cacheDir = await freshDir();
    const seen: [string, number, number][] = [];
    const resolved = await resolveModel(REPO, { hubUrl: hub.url, cacheDir, onProgress: (...a) => seen.push(a) });

    const storage = join(cacheDir, STORAGE);
    const snapshot = join(storage, 'snapshots', COMMIT);
    expect(resolved).toEqual({ kind: 'folder', folder: snapshot });
    expect(await readFile(join(storage, 'refs', 'main'), 'utf8')).toBe(COMMIT);
    const sha256 = createHash('sha256').update(files.get('model.safetensors')!).digest('hex');
    expect(await readlink(join(snapshot, 'model.safetensors'))).toBe(join('..', '..', 'blobs', sha256));
    expect(await readlink(join(snapshot, 'config.json'))).toBe(join('..', '..', 'blobs', gitBlobSha1(files.get('config.json')!)));
    expect((await readdir(join(storage, 'blobs'))).sort()).toEqual([sha256, gitBlobSha1(files.get('config.json')!)].sort());
    expect(hub.requests).toContain(`GET /${REPO}/resolve/${COMMIT}/model.safetensors`);
    const size = files.get('model.safetensors')!.length;
    expect(seen.filter(([f]) => f === 'model.safetensors').at(-1)).toEqual(['model.safetensors', size, size]);
    expectSameTensors((await loadGpt2Weights(snapshot)).weights, weights);

    await hub.stop();
    hub.requests.length = 0;
    expect(await resolveModel(REPO, { hubUrl: hub.url, cacheDir, onProgress: quiet })).toEqual(resolved);
    expect(await resolveModel(REPO, { hubUrl: hub.url, cacheDir, offline: true })).toEqual(resolved);
    expect(hub.requests).toEqual([]);
  });

  it('an interrupted transfer leaves nothing that passes for complete, and the retry succeeds', async () => {
    const { hub, weights } = await tinyModelOnFakeHub();
    const cacheDir = await freshDir();
    hub.cutNext = 'model.safetensors';
    await expect(resolveModel(REPO, { hubUrl: hub.url, cacheDir, onProgress: quiet })).rejects.toThrow(
      new RegExp(`downloading model\\.safetensors of ${REPO} from ${hub.url} failed \\(.+\\); run again to retry`),
    );
    const storage = join(cacheDir, STORAGE);
    expect(existsSync(join(storage, 'snapshots', COMMIT, 'model.safetensors'))).toBe(false);
    expect(existsSync(join(storage, 'refs', 'main'))).toBe(false);
    expect((await readdir(join(storage, 'blobs'))).filter((b) => b.length === 64)).toEqual([]);
    await expect(resolveModel(REPO, { hubUrl: hub.url, cacheDir, offline: true })).rejects.toThrow('is not in the Hugging Face cache');

    const { folder } = (await resolveModel(REPO, { hubUrl: hub.url, cacheDir, onProgress: quiet })) as { folder: string };
    expectSameTensors((await loadGpt2Weights(folder)).weights, weights);
  });

  it('honours HF_HUB_CACHE and draws a line per 10% on a non-terminal stderr', async () => {
    const { hub } = await tinyModelOnFakeHub();
    const cacheDir = await freshDir();
    vi.stubEnv('HF_HUB_CACHE', cacheDir);
    const lines: string[] = [];
    vi.spyOn(process.stderr, 'write').mockImplementation((chunk) => (lines.push(String(chunk)), true));
    const resolved = await resolveModel(REPO, { hubUrl: hub.url });
    vi.restoreAllMocks();
    expect(resolved).toEqual({ kind: 'folder', folder: join(cacheDir, STORAGE, 'snapshots', COMMIT) });
    const bar = lines.filter((l) => l.startsWith(`${REPO}/model.safetensors `));
    expect(bar.length).toBeGreaterThanOrEqual(2);
    expect(bar.length).toBeLessThanOrEqual(11);
    expect(bar.at(-1)).toMatch(/ 100% \d+\.\d\/\d+\.\d MB \d+\.\d MB\/s\n$/);
  });

  it('finds a model that Python huggingface_hub put in the cache, without the network', async () => {
    const cacheDir = await freshDir();
    const storage = join(cacheDir, STORAGE);
    const source = await freshDir();
    const weights = randomGpt2Weights(PRESETS.tiny, 22);
    await saveGpt2Weights(source, PRESETS.tiny, weights);
    await mkdir(join(storage, 'blobs'), { recursive: true });
    await mkdir(join(storage, 'snapshots', COMMIT), { recursive: true });
    await mkdir(join(storage, 'refs'));
    for (const [name, blob] of [['config.json', 'c0ffee'], ['model.safetensors', 'deadbeef']]) {
      await writeFile(join(storage, 'blobs', blob), await readFile(join(source, name)));
      await symlink(join('..', '..', 'blobs', blob), join(storage, 'snapshots', COMMIT, name));
    }
    await writeFile(join(storage, 'refs', 'main'), COMMIT);
    const resolved = await resolveModel(REPO, { hubUrl: await unreachableHubUrl(), cacheDir });
    expect(resolved).toEqual({ kind: 'folder', folder: join(storage, 'snapshots', COMMIT) });
  });

  it('offline with nothing cached says what to download, from where, and where to put it', async () => {
    const cacheDir = await freshDir();
    const hubUrl = await unreachableHubUrl();
    const error = (await resolveModel(REPO, { hubUrl, cacheDir }).then(() => null, (e: unknown) => e)) as Error;
    expect(error.message).toContain(`Cannot download ${REPO} (fetch failed: ECONNREFUSED) and it is not in the Hugging Face cache (${join(cacheDir, STORAGE)})`);
    expect(error.message).toContain(`download config.json and model.safetensors from ${hubUrl}/${REPO}/tree/main into a folder and pass that folder with --model`);
    expect(error.message).toContain(`hf download ${REPO} config.json model.safetensors --cache-dir ${cacheDir}`);
  });

  it('an unknown repo is reported as such', async () => {
    const { hub } = await tinyModelOnFakeHub();
    await expect(resolveModel('test-org/absent', { hubUrl: hub.url, cacheDir: await freshDir() })).rejects.toThrow(
      `test-org/absent: no such repo on ${hub.url} (HTTP 404; a private or gated one needs HF_TOKEN), and no local folder of that name`,
    );
  });
});

describe('model specs', () => {
  it('small presets are random-weight models, the published ones hub repos', () => {
    expect(resolveModelSource('tiny')).toEqual({ kind: 'preset-random', name: 'tiny', config: PRESETS.tiny });
    expect(resolveModelSource('demo').kind).toBe('preset-random');
    expect(resolveModelSource('gpt2-medium')).toEqual({ kind: 'hub', repo: 'openai-community/gpt2-medium' });
    expect(resolveModelSource('someone/gpt2-finetuned')).toEqual({ kind: 'hub', repo: 'someone/gpt2-finetuned' });
    expect(() => resolveModelSource('gpt3')).toThrow('--model gpt3: not a preset (gpt2, gpt2-medium, gpt2-large, gpt2-xl, tiny, demo), an existing folder, or a hub repo owner/name');
  });

  it('an existing folder is used as is, and must hold both files', async () => {
    const folder = await freshDir();
    expect(() => resolveModelSource(folder)).toThrow(`${folder} lacks config.json and model.safetensors`);
    await saveGpt2Weights(folder, PRESETS.tiny, randomGpt2Weights(PRESETS.tiny, 23));
    expect(resolveModelSource(folder)).toEqual({ kind: 'folder', folder });
    expect(() => resolveModelSource(join(folder, 'config.json'))).toThrow('is a file: pass the folder that holds config.json + model.safetensors');
  });
});
