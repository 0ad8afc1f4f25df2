/**
 * What the interactive mode makes of the lines a user types, apart from the terminal: a line
 * ending in `\` continues on the next one; `/help`, `/reset` and `/raw` are commands; anything
 * else becomes a prompt: an instruction in the Alpaca template, or (raw) the text as it is. In a
 * conversation, earlier turns (prompt and response) go before it, the oldest dropped first so
 * that the prompt leaves room for the response within the context.
 */
import { ALPACA_SECTION_STOPS, alpacaPrompt } from '../train/instruction-data.js';

export const CHAT_HELP = `Commands:
  /help    this text
  /reset   forget the conversation's earlier turns
  /raw     switch between instructions (the Alpaca template) and raw prompts (text continued as it is)
End a line with \\ to go on on the next one. Ctrl-C stops a response; Ctrl-C at an empty prompt or Ctrl-D quits.`;

export type ChatStep =
  | { kind: 'more' }
  | { kind: 'say'; text: string }
  | { kind: 'prompt'; text: string; stops: readonly string[] };

export interface ChatSessionOptions {
  raw: boolean;
  conversation: boolean;
  /** Tokens of a text (for fitting the conversation into the context). */
  countTokens(text: string): number;
  /** The model's context, and the tokens to leave for a response. */
  contextLength: number;
  responseTokens: number;
}

export class ChatSession {
  raw: boolean;
  private readonly turns: string[] = [];
  private pending: string[] = [];
  private current: string | null = null;

  constructor(private readonly options: ChatSessionOptions) {
    this.raw = options.raw;
  }

  /** The prompt to show: `instruction> `, `prompt> `, or `... ` while a line goes on. */
  get promptLabel(): string {
    if (this.pending.length > 0) return '... ';
    return this.raw ? 'prompt> ' : 'instruction> ';
  }

  /** Takes one typed line. */
  feed(line: string): ChatStep {
    if (line.endsWith('\\')) {
      this.pending.push(line.slice(0, -1));
      return { kind: 'more' };
    }
    const text = [...this.pending, line].join('\n');
    this.pending = [];
    const command = text.trim();
    if (command === '/help') return { kind: 'say', text: CHAT_HELP };
    if (command === '/reset') {
      this.turns.length = 0;
      return { kind: 'say', text: 'the conversation starts over' };
    }
    if (command === '/raw') {
      this.raw = !this.raw;
      return { kind: 'say', text: this.raw ? 'raw prompts: text is continued as it is' : 'instructions: each line is answered in the Alpaca template' };
    }
    if (command.startsWith('/')) return { kind: 'say', text: `unknown command ${command.split(/\s/)[0]}: /help lists them` };
    if (command === '') return { kind: 'more' };
    const turn = this.raw ? text : alpacaPrompt({ instruction: command });
    this.current = turn;
    return { kind: 'prompt', text: this.withHistory(turn), stops: this.raw ? [] : ALPACA_SECTION_STOPS };
  }

  /** Discards a half-typed continuation (Ctrl-C). */
  cancel(): void {
    this.pending = [];
  }

  /** The response to the last prompt: in a conversation, the turn joins the history. */
  answered(response: string): void {
    if (this.current === null) return;
    if (this.options.conversation) this.turns.push(this.raw ? this.current + response : `${this.current}${response}\n\n`);
    this.current = null;
  }

  private withHistory(turn: string): string {
    if (!this.options.conversation) return turn;
    const { contextLength, responseTokens, countTokens } = this.options;
    const budget = contextLength - Math.min(responseTokens, Math.floor(contextLength / 2));
    while (this.turns.length > 0 && countTokens(this.turns.join('') + turn) > budget) this.turns.shift();
    return this.turns.join('') + turn;
  }
}
