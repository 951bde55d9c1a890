// The openai package (the official JavaScript client) against wgllm.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';

const client = new OpenAI({ baseURL: `${process.env.WGLLM_URL}/v1`, apiKey: 'unused', maxRetries: 0 });
const model = process.env.WGLLM_MODEL;

const weather = {
  type: 'function',
  function: {
    name: 'get_weather',
    description: 'Weather in a city',
    parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
  },
};

test('chat completion', async () => {
  const res = await client.chat.completions.create({
    model, messages: [{ role: 'user', content: 'In the beginning' }], max_tokens: 8, temperature: 0,
  });
  const choice = res.choices[0];
  assert.equal(choice.message.role, 'assistant');
  assert.equal(typeof choice.message.content, 'string');
  assert.ok(choice.message.content.length > 0);
  assert.ok(['stop', 'length'].includes(choice.finish_reason));
  assert.ok(res.usage.prompt_tokens > 0 && res.usage.completion_tokens > 0);
});

test('streamed chat completion', async () => {
  const stream = await client.chat.completions.create({
    model, messages: [{ role: 'user', content: 'And God said' }], max_tokens: 8, temperature: 0, stream: true,
    stream_options: { include_usage: true },
  });
  let text = '';
  let finish = null;
  let usage = null;
  for await (const chunk of stream) {
    if (chunk.usage) usage = chunk.usage;
    for (const c of chunk.choices) {
      text += c.delta.content ?? '';
      finish = c.finish_reason ?? finish;
    }
  }
  assert.ok(text.length > 0);
  assert.ok(['stop', 'length'].includes(finish));
  assert.ok(usage && usage.completion_tokens > 0);
});

test('tools offered, the model answers as it likes', async () => {
  const res = await client.chat.completions.create({
    model, messages: [{ role: 'user', content: 'What is the weather in Paris?' }], tools: [weather], max_tokens: 8,
  });
  assert.ok(['stop', 'length', 'tool_calls'].includes(res.choices[0].finish_reason));
});

test('a tool message answering a call is rendered; one answering nothing is a 400', async () => {
  const history = [
    { role: 'user', content: 'Weather in Paris?' },
    { role: 'assistant', content: null, tool_calls: [{ id: 'call_1', type: 'function', function: { name: 'get_weather', arguments: '{"city":"Paris"}' } }] },
    { role: 'tool', tool_call_id: 'call_1', content: 'sunny' },
  ];
  const res = await client.chat.completions.create({ model, messages: history, tools: [weather], max_tokens: 4 });
  assert.equal(typeof res.choices[0].message.content, 'string');
  await assert.rejects(
    client.chat.completions.create({ model, messages: [history[0], { role: 'tool', tool_call_id: 'nope', content: 'x' }], max_tokens: 4 }),
    (err) => err instanceof OpenAI.BadRequestError && err.param === 'messages[1].tool_call_id',
  );
});

test('a tool whose parameters are not a JSON schema is a 400 naming the field', async () => {
  await assert.rejects(
    client.chat.completions.create({
      model, messages: [{ role: 'user', content: 'x' }], max_tokens: 4,
      tools: [{ type: 'function', function: { name: 'f', parameters: { type: 'object', properties: { a: { type: 'thing' } } } } }],
    }),
    (err) => err instanceof OpenAI.BadRequestError && err.param === 'tools[0].function.parameters',
  );
});

test('a prompt over the context is context_length_exceeded', async () => {
  await assert.rejects(
    client.chat.completions.create({ model, messages: [{ role: 'user', content: 'And God said, '.repeat(200) }], max_tokens: 4 }),
    (err) => err instanceof OpenAI.BadRequestError && err.code === 'context_length_exceeded',
  );
});

test('a named tool_choice always gets a valid call (constrained by grammar), whole and streamed', async () => {
  const params = {
    model, messages: [{ role: 'user', content: 'Weather in Paris?' }], tools: [weather],
    tool_choice: { type: 'function', function: { name: 'get_weather' } }, max_tokens: 40,
  };
  const res = await client.chat.completions.create(params);
  const choice = res.choices[0];
  assert.equal(choice.finish_reason, 'tool_calls');
  const call = choice.message.tool_calls[0];
  assert.equal(call.type, 'function');
  assert.match(call.id, /^call_/);
  assert.equal(call.function.name, 'get_weather');
  assert.equal(typeof JSON.parse(call.function.arguments).city, 'string');

  // The SDK's stream helper assembles the tool_calls deltas (index, id,
  // name, then argument fragments) and fails on a malformed one.
  const stream = client.chat.completions.stream(params);
  const final = await stream.finalChatCompletion();
  const scall = final.choices[0].message.tool_calls[0];
  assert.equal(final.choices[0].finish_reason, 'tool_calls');
  assert.equal(scall.function.name, 'get_weather');
  assert.equal(typeof JSON.parse(scall.function.arguments).city, 'string');
});

test('tool_choice required gets a call of one of the tools', async () => {
  const time = { type: 'function', function: { name: 'get_time', parameters: { type: 'object', properties: {} } } };
  const res = await client.chat.completions.create({
    model, messages: [{ role: 'user', content: 'Now?' }], tools: [weather, time], tool_choice: 'required', max_tokens: 40,
  });
  const call = res.choices[0].message.tool_calls[0];
  assert.ok(['get_weather', 'get_time'].includes(call.function.name));
  assert.equal(typeof JSON.parse(call.function.arguments), 'object');
});
