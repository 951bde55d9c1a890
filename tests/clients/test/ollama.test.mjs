// The ollama package (Ollama's JavaScript client) against wgllm's /api.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Ollama } from 'ollama';

const ollama = new Ollama({ host: process.env.WGLLM_URL });
const model = process.env.WGLLM_MODEL;

test('chat', async () => {
  const res = await ollama.chat({ model, messages: [{ role: 'user', content: 'In the beginning' }], options: { num_predict: 8, temperature: 0 } });
  assert.equal(res.message.role, 'assistant');
  assert.ok(res.message.content.length > 0);
  assert.equal(res.done, true);
  assert.ok(res.eval_count > 0 && res.prompt_eval_count > 0);
});

test('streamed generate', async () => {
  const stream = await ollama.generate({ model, prompt: 'And God said', stream: true, options: { num_predict: 8 } });
  let text = '';
  let last = null;
  for await (const part of stream) {
    text += part.response;
    last = part;
  }
  assert.ok(text.length > 0);
  assert.equal(last.done, true);
});

test('chat with tools is accepted', async () => {
  const res = await ollama.chat({
    model, messages: [{ role: 'user', content: 'Weather in Paris?' }], options: { num_predict: 8 },
    tools: [{ type: 'function', function: { name: 'get_weather', description: 'Weather in a city', parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] } } }],
  });
  assert.equal(res.done, true);
  assert.ok(Array.isArray(res.message.tool_calls ?? []));
});
