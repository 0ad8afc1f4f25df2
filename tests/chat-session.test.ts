/** The interactive mode's lines apart from the terminal: continued lines, commands, raw prompts, and a conversation fitted to the context. */
import { describe, expect, it } from 'vitest';
import { ChatSession, CHAT_HELP } from '../src/cli/chat-session.js';
import { ALPACA_SECTION_STOPS, alpacaPrompt } from '../src/train/instruction-data.js';

/** One "token" a character keeps the arithmetic of the context visible. */
const session = (options: { raw?: boolean; conversation?: boolean; contextLength?: number; responseTokens?: number } = {}) =>
  new ChatSession({ raw: false, conversation: false, countTokens: (t) => t.length, contextLength: 10_000, responseTokens: 100, ...options });

describe('ChatSession', () => {
  it('an instruction becomes the Alpaca prompt, stopped at the template headers', () => {
    expect(session().feed('  Name a color. ')).toEqual({ kind: 'prompt', text: alpacaPrompt({ instruction: 'Name a color.' }), stops: ALPACA_SECTION_STOPS });
  });

  it('a trailing backslash continues the line; the lines join with newlines', () => {
    const s = session({ raw: true });
    expect(s.promptLabel).toBe('prompt> ');
    expect(s.feed('first\\')).toEqual({ kind: 'more' });
    expect(s.promptLabel).toBe('... ');
    expect(s.feed('second\\')).toEqual({ kind: 'more' });
    expect(s.feed('third')).toEqual({ kind: 'prompt', text: 'first\nsecond\nthird', stops: [] });
    expect(s.promptLabel).toBe('prompt> ');
    s.feed('half\\');
    s.cancel(); // Ctrl-C drops the continued lines
    expect(s.feed('new')).toMatchObject({ text: 'new' });
  });

  it('/help, /raw, unknown commands; an empty line does nothing', () => {
    const s = session();
    expect(s.feed('/help')).toEqual({ kind: 'say', text: CHAT_HELP });
    expect(s.feed('/raw')).toMatchObject({ kind: 'say', text: expect.stringMatching(/^raw prompts/) });
    expect(s.feed('Once upon')).toEqual({ kind: 'prompt', text: 'Once upon', stops: [] });
    expect(s.feed('/raw')).toMatchObject({ kind: 'say', text: expect.stringMatching(/^instructions/) });
    expect(s.promptLabel).toBe('instruction> ');
    expect(s.feed('/nope x')).toEqual({ kind: 'say', text: 'unknown command /nope: /help lists them' });
    expect(s.feed('   ')).toEqual({ kind: 'more' });
  });

  it('without --conversation every turn stands alone', () => {
    const s = session({ raw: true });
    s.feed('A');
    s.answered('1');
    expect(s.feed('B')).toMatchObject({ text: 'B' });
  });

  it('a conversation keeps earlier turns, drops the oldest to leave room for the response, and /reset forgets them', () => {
    // Budget: 40 - min(10, 20) = 30 characters of prompt.
    const s = session({ raw: true, conversation: true, contextLength: 40, responseTokens: 10 });
    s.feed('aaaa');
    s.answered('AAAA'); // turn 1: 8
    expect(s.feed('bbbb')).toMatchObject({ text: 'aaaaAAAAbbbb' });
    s.answered('BBBB'); // turn 2: 8
    expect(s.feed('cccc')).toMatchObject({ text: 'aaaaAAAAbbbbBBBBcccc' });
    s.answered('CCCCCCCCCC'); // turn 3: 14
    expect(s.feed('dddd')).toMatchObject({ text: 'bbbbBBBBccccCCCCCCCCCCdddd' }); // 8 + 14 + 4 = 26 ≤ 30; with turn 1: 34
    s.answered('D');
    expect(s.feed('/reset')).toEqual({ kind: 'say', text: 'the conversation starts over' });
    expect(s.feed('eeee')).toMatchObject({ text: 'eeee' });
  });

  it('a conversation of instructions keeps each turn as prompt, response and a blank line', () => {
    const s = session({ conversation: true });
    s.feed('Say hi.');
    s.answered('Hi.');
    expect(s.feed('Again.')).toMatchObject({ text: `${alpacaPrompt({ instruction: 'Say hi.' })}Hi.\n\n${alpacaPrompt({ instruction: 'Again.' })}` });
  });
});
