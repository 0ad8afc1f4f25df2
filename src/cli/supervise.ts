/**
 * Runs a command's work in a child process whose only parent job is to relay signals.
 *
 * Why: `npx tsx src/train.ts` puts tsx's CLI between the terminal and our process, and on Ctrl-C it
 * waits 30 ms for our process to acknowledge the signal, then sends it again and, 30 ms later,
 * SIGKILL. A training step records its GPU work synchronously for longer than that, so the run died
 * before it could write its checkpoint. The supervisor's event loop is always idle, so it answers
 * tsx at once; the worker runs in its own process group, out of the terminal's reach, and gets each
 * signal exactly once, from the supervisor.
 */
import { spawn } from 'node:child_process';
import { constants } from 'node:os';

const WORKER_MARK = 'GPT2_WEBGPU_WORKER';
const RELAYED = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;
/** Copies of one signal closer together than this are one press (a person's second Ctrl-C comes later). */
const REPEAT_MS = 300;

/** True in the worker that `superviseSelf` started. */
export const isWorker = (): boolean => process.env[WORKER_MARK] === '1';

/**
 * Starts this script again (same Node flags, same arguments) as the worker, relays Ctrl-C, SIGTERM
 * and SIGHUP to it, and resolves with its exit code. The worker sees 'disconnect' if the supervisor
 * dies, and should then stop as on Ctrl-C.
 */
export function superviseSelf(): Promise<number> {
  const child = spawn(process.execPath, [...process.execArgv, ...process.argv.slice(1)], {
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    detached: true,
    env: { ...process.env, [WORKER_MARK]: '1' },
  });
  // tsx's CLI sends a signal again when its first copy seems unanswered (30 ms, a busy host): one
  // press is one signal to the worker, whose second would mean "quit at once".
  const lastRelayed = new Map<NodeJS.Signals, number>();
  const relay = (signal: NodeJS.Signals) => {
    const now = performance.now();
    if (now - (lastRelayed.get(signal) ?? -Infinity) < REPEAT_MS) return;
    lastRelayed.set(signal, now);
    child.kill(signal);
  };
  for (const signal of RELAYED) process.on(signal, relay);
  return new Promise((resolve, reject) => {
    child.on('error', reject);
    child.on('exit', (code, signal) => {
      for (const s of RELAYED) process.off(s, relay);
      resolve(code ?? 128 + (signal ? constants.signals[signal] : 0));
    });
  });
}
