#!/usr/bin/env node
// A tool-call round trip with the official openai npm client against
// corelm's HTTP gateway: the model is made to call get_weather
// (tool_choice names it), whole and streamed (the client's stream helper
// accumulates delta.tool_calls); the call runs here, and the assistant's
// message as the client parsed it goes back with the tool's result for the
// next turn. Prints what the client parsed as one JSON object; the
// gateway's tests check it.
//
//   node tools.mjs --base-url http://127.0.0.1:8080/v1 --model llama31 [--seed 1] [--api-key KEY]
import OpenAI from 'openai';

function parseArgs(argv) {
  const opts = { baseURL: 'http://127.0.0.1:8080/v1', model: 'llama31', seed: 1, apiKey: process.env.OPENAI_API_KEY || 'none' };
  for (let i = 0; i < argv.length; i++) {
    const next = () => argv[++i];
    switch (argv[i]) {
      case '--base-url': opts.baseURL = next(); break;
      case '--model': opts.model = next(); break;
      case '--seed': opts.seed = Number(next()); break;
      case '--api-key': opts.apiKey = next(); break;
      default: throw new Error(`unknown flag ${argv[i]}`);
    }
  }
  return opts;
}

const tools = [{
  type: 'function',
  function: {
    name: 'get_weather',
    description: 'Current weather in a city.',
    parameters: {
      type: 'object',
      properties: { city: { type: 'string', maxLength: 12 }, unit: { enum: ['C', 'F'] } },
      required: ['city'],
    },
  },
}];

function getWeather({ city, unit = 'C' }) {
  return { city, temperature: 21, unit };
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const client = new OpenAI({ baseURL: opts.baseURL, apiKey: opts.apiKey, maxRetries: 0 });
  const messages = [{ role: 'user', content: "What's the weather in Paris?" }];
  const request = {
    model: opts.model, messages, tools, tool_choice: { type: 'function', function: { name: 'get_weather' } },
    temperature: 1, seed: opts.seed, max_tokens: 120,
  };
  const out = {};

  const whole = await client.chat.completions.create(request);
  const message = whole.choices[0].message;
  out.call = { finish_reason: whole.choices[0].finish_reason, content: message.content, tool_calls: message.tool_calls };

  const stream = client.chat.completions.stream({ ...request, stream: true });
  const streamed = await stream.finalChatCompletion();
  out.call_stream = {
    finish_reason: streamed.choices[0].finish_reason,
    content: streamed.choices[0].message.content,
    tool_calls: streamed.choices[0].message.tool_calls,
  };

  // Run the call, send the result back with the assistant's message as the
  // client parsed it.
  const results = (message.tool_calls ?? []).map((call) => ({
    role: 'tool', tool_call_id: call.id, content: JSON.stringify(getWeather(JSON.parse(call.function.arguments))),
  }));
  const next = await client.chat.completions.create({
    model: opts.model, tools, temperature: 0, max_tokens: 8, messages: [...messages, message, ...results],
  });
  out.answer = { finish_reason: next.choices[0].finish_reason, content: next.choices[0].message.content, usage: next.usage };
  out.tool_messages = results;
  process.stdout.write(JSON.stringify(out) + '\n');
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
