// Talks to `npx tsx src/serve.ts` with the official openai client (npm install openai).
import OpenAI from 'openai';

const client = new OpenAI({
  baseURL: process.env.OPENAI_BASE_URL ?? 'http://127.0.0.1:8080/v1',
  apiKey: process.env.OPENAI_API_KEY ?? 'none', // what --api-key was, if the server has one
});
const [{ id: model }] = (await client.models.list()).data; // the --model the server was started with

const chat = await client.chat.completions.create({
  model,
  messages: [{ role: 'user', content: 'Name three primary colors.' }],
  max_tokens: 20,
  temperature: 0,
});
console.log(chat.choices[0].message.content, chat.usage);

const stream = await client.completions.create({ model, prompt: 'Once upon a time', max_tokens: 20, stream: true });
for await (const chunk of stream) process.stdout.write(chunk.choices[0]?.text ?? '');
process.stdout.write('\n');
