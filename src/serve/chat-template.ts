/**
 * A chat as one Alpaca prompt. System (and developer) messages, joined by blank lines, replace the
 * template's preamble; the other messages follow in order, a user message as an `### Instruction:`
 * section and an assistant message as a `### Response:` section; the prompt ends with an open
 * `### Response:` for the reply. One user message and no system message give exactly
 * `alpacaPrompt({ instruction })`, the prompt a fine-tuned model learned. The last message must be
 * the user's. When the chat does not fit in the context, its oldest user and assistant messages are
 * dropped first; the system messages and the last user message are always kept.
 */
import { ALPACA_PREAMBLE } from '../train/instruction-data.js';
import { ApiError } from './errors.js';
import type { ChatMessage } from './schemas.js';

const textOf = (message: ChatMessage): string =>
  typeof message.content === 'string' ? message.content : message.content.map((part) => part.text).join('');

const isSystem = (message: ChatMessage): boolean => message.role === 'system' || message.role === 'developer';

/** The Alpaca prompt of `messages` (see the header). */
export function renderChat(messages: readonly ChatMessage[]): string {
  if (messages.length === 0 || messages[messages.length - 1].role !== 'user') {
    throw new ApiError(400, 'the last message must be the user\'s (the model replies to it)', 'invalid_request_error', 'messages');
  }
  const system = messages.filter(isSystem).map(textOf);
  const sections = messages
    .filter((m) => !isSystem(m))
    .map((m) => (m.role === 'user' ? `\n\n### Instruction:\n${textOf(m)}` : `\n\n### Response:\n${textOf(m)}`));
  return (system.length > 0 ? system.join('\n\n') : ALPACA_PREAMBLE) + sections.join('') + '\n\n### Response:\n';
}

/**
 * The prompt of the longest recent part of the chat for which `fits` holds: the oldest user and
 * assistant messages are dropped one by one. Returns null when even the system messages and the
 * last user message alone do not fit.
 */
export function fitChat(messages: readonly ChatMessage[], fits: (prompt: string) => boolean): string | null {
  let kept = [...messages];
  while (true) {
    const prompt = renderChat(kept);
    if (fits(prompt)) return prompt;
    const oldest = kept.findIndex((m) => !isSystem(m));
    if (oldest === kept.length - 1) return null;
    kept = kept.filter((_, i) => i !== oldest);
  }
}
