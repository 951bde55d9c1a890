// LangChain JS (@langchain/openai and @langchain/ollama) against wgllm.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ChatOpenAI } from '@langchain/openai';
import { ChatOllama } from '@langchain/ollama';
import { tool } from '@langchain/core/tools';
import { HumanMessage } from '@langchain/core/messages';
import { z } from 'zod';

const model = process.env.WGLLM_MODEL;
const openai = new ChatOpenAI({ model, apiKey: 'unused', configuration: { baseURL: `${process.env.WGLLM_URL}/v1` }, maxTokens: 8, maxRetries: 0 });
const ollama = new ChatOllama({ model, baseUrl: process.env.WGLLM_URL, numPredict: 8 });
// Room for a whole tool call or object.
const openaiLong = new ChatOpenAI({ model, apiKey: 'unused', configuration: { baseURL: `${process.env.WGLLM_URL}/v1` }, maxTokens: 48, maxRetries: 0 });
const ollamaLong = new ChatOllama({ model, baseUrl: process.env.WGLLM_URL, numPredict: 48 });

const getWeather = tool(async ({ city }) => `sunny in ${city}`, {
  name: 'get_weather',
  description: 'Weather in a city',
  schema: z.object({ city: z.string() }),
});

test('ChatOpenAI invoke and stream', async () => {
  const msg = await openai.invoke([new HumanMessage('In the beginning')]);
  assert.equal(typeof msg.content, 'string');
  assert.ok(msg.content.length > 0);
  let text = '';
  for await (const chunk of await openai.stream('And God said')) text += chunk.content;
  assert.ok(text.length > 0);
});

test('ChatOllama invoke and stream', async () => {
  const msg = await ollama.invoke('In the beginning');
  assert.ok(msg.content.length > 0);
  let text = '';
  for await (const chunk of await ollama.stream('And God said')) text += chunk.content;
  assert.ok(text.length > 0);
});

test('ChatOpenAI bindTools: tools offered (auto)', async () => {
  const msg = await openai.bindTools([getWeather]).invoke('Weather in Paris?');
  assert.ok(Array.isArray(msg.tool_calls));
});

test('ChatOllama bindTools: tools offered', async () => {
  const msg = await ollama.bindTools([getWeather]).invoke('Weather in Paris?');
  assert.ok(Array.isArray(msg.tool_calls));
});

test('ChatOpenAI bindTools with tool_choice: a call of the tool, with its arguments', async () => {
  const msg = await openaiLong.bindTools([getWeather], { tool_choice: 'get_weather' }).invoke('Weather in Paris?');
  assert.equal(msg.tool_calls.length, 1);
  assert.equal(msg.tool_calls[0].name, 'get_weather');
  assert.equal(typeof msg.tool_calls[0].args.city, 'string');
  assert.ok(msg.tool_calls[0].id);
});

test('ChatOpenAI withStructuredOutput', async () => {
  const out = await openaiLong.withStructuredOutput(z.object({ answer: z.string() }), { name: 'reply' }).invoke('Say something.');
  assert.equal(typeof out.answer, 'string');
});

test('ChatOllama withStructuredOutput', async () => {
  const out = await ollamaLong.withStructuredOutput(z.object({ answer: z.string() })).invoke('Say something.');
  assert.equal(typeof out.answer, 'string');
});
