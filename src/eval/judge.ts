/**
 * LLM-as-judge as the course's chapter 7 does it: a second model, behind any OpenAI-compatible
 * `/v1/chat/completions` endpoint, scores each response from 0 to 100 against the reference.
 * A reply that is not a number in that range is counted, not fatal.
 */
import { formatInput, type InstructionEntry } from '../train/instruction-data.js';

export interface JudgeOptions {
  /** The API's base URL, up to and including `/v1`. */
  url: string;
  model: string;
  apiKey?: string;
  signal?: AbortSignal;
}

/** Chapter 7's prompt, with its format_input (the Alpaca prompt without the response header). */
export function judgePrompt(entry: InstructionEntry, response: string): string {
  const input = formatInput(entry).prompt.replace(/\n\n### Response:\n$/, '');
  return (
    `Given the input \`${input}\` ` +
    `and correct output \`${entry.output}\`, ` +
    `score the model response \`${response}\`` +
    ` on a scale from 0 to 100, where 100 is the best score. ` +
    'Respond with the integer number only.'
  );
}

/** The score a reply holds (an integer 0–100, alone but for whitespace and a final period), or null. */
export function parseScore(reply: string): number | null {
  const match = /^\s*(\d{1,3})\.?\s*$/.exec(reply);
  if (match === null) return null;
  const score = Number(match[1]);
  return score <= 100 ? score : null;
}

/** The judge's reply to one response; throws when the endpoint fails (an HTTP error or no reply). */
export async function judgeReply(entry: InstructionEntry, response: string, options: JudgeOptions): Promise<string> {
  const url = `${options.url.replace(/\/+$/, '')}/chat/completions`;
  const reply = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(options.apiKey ? { authorization: `Bearer ${options.apiKey}` } : {}) },
    body: JSON.stringify({ model: options.model, messages: [{ role: 'user', content: judgePrompt(entry, response) }], temperature: 0 }),
    signal: options.signal,
  });
  if (!reply.ok) throw new Error(`${url}: HTTP ${reply.status} ${(await reply.text()).slice(0, 200)}`);
  const body = (await reply.json()) as { choices?: { message?: { content?: unknown } }[] };
  const content = body.choices?.[0]?.message?.content;
  if (typeof content !== 'string') throw new Error(`${url}: the reply holds no choices[0].message.content`);
  return content;
}
