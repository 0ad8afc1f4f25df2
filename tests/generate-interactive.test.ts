/**
 * The interactive mode in a real terminal (util-linux `script` gives it a pseudo-terminal; what the
 * test writes is typed at it): Ctrl-C stops a response at once and returns to the prompt, the
 * prompt then takes the next instruction, and Ctrl-C at an empty prompt quits with exit code 0.
 */
import { spawn } from 'node:child_process';
import { describe, expect, it } from 'vitest';

const CTRL_C = '\x03';

function terminal(command: string) {
  const child = spawn('script', ['-qfec', command, '/dev/null'], { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, HF_HUB_OFFLINE: '1' } });
  let screen = '';
  child.stdout.on('data', (d) => (screen += d));
  const closed = new Promise<number | null>((resolve) => child.on('close', resolve));
  return {
    type: (keys: string) => child.stdin.write(keys),
    /** Resolves once the screen, from `from` on, matches `pattern`. */
    async waitFor(pattern: RegExp, from = 0): Promise<void> {
      const started = Date.now();
      while (!pattern.test(screen.slice(from))) {
        if (Date.now() - started > 60_000) throw new Error(`timed out waiting for ${pattern}; the screen ends:\n${screen.slice(-800)}`);
        await new Promise((r) => setTimeout(r, 50));
      }
    },
    get length() {
      return screen.length;
    },
    closed,
  };
}

describe('interactive generation in a terminal', () => {
  it('Ctrl-C stops a response and returns to a working prompt; Ctrl-C at an empty prompt quits', async () => {
    // 100000 tokens: only Ctrl-C can end this response within the test's time.
    const tty = terminal('node --import tsx src/generate.ts --model tiny --device cpu --max-tokens 100000 --temperature 1 --seed 1');
    await tty.waitFor(/instruction> /);
    tty.type('Write a long story.\r');
    await tty.waitFor(/\S{40}/, tty.length); // tokens are streaming
    const before = tty.length;
    tty.type(CTRL_C);
    await tty.waitFor(/stop: aborted, cache on, seed 1\][\s\S]*instruction> /, before); // turn 1: --seed

    const next = tty.length;
    tty.type('Hi\r');
    await tty.waitFor(/Hi[\s\S]*\S{40}/, next); // the prompt took the line and answers it
    tty.type(CTRL_C);
    await tty.waitFor(/stop: aborted, cache on, seed 2\][\s\S]*instruction> /, next); // turn 2: its own seed
    tty.type(CTRL_C);
    expect(await tty.closed).toBe(0);
  }, 120_000);

  it('/help, a line continued with a trailing backslash, and a raw prompt', async () => {
    const tty = terminal('node --import tsx src/generate.ts --model tiny --device cpu -n 3 --seed 5');
    await tty.waitFor(/instruction> /);
    let from = tty.length;
    tty.type('/help\r');
    await tty.waitFor(/\/reset[\s\S]*instruction> /, from);
    from = tty.length;
    tty.type('/raw\r');
    await tty.waitFor(/raw prompts[\s\S]*prompt> /, from);
    from = tty.length;
    tty.type('one\\\r');
    await tty.waitFor(/\.\.\. /, from);
    tty.type('two\r');
    // "one\ntwo" is 3 tokens: the prompt is the two lines joined, without the template.
    await tty.waitFor(/3 tokens in [\d.]+ s: [\d.]+ tokens\/s, 3 prompt tokens, stop: length, cache on, seed 5\][\s\S]*prompt> /, from);
    tty.type(CTRL_C);
    expect(await tty.closed).toBe(0);
  }, 120_000);
});
