#!/usr/bin/env node
// Runs the official openai npm client against corelm's HTTP gateway: a
// chat completion and a completion, each whole and streamed (with
// stream_options.include_usage), greedy, and embeddings of two texts (the
// client's default base64 encoding, and floats), and prints what the client
// parsed as one JSON object. The gateway's tests compare it with a direct gRPC
// generation.
//
//   node openai.mjs --base-url http://127.0.0.1:8080/v1 --model stories \
//     --prompt "Once upon a time" --max-tokens 24 [--api-key KEY]
import OpenAI from 'openai';

function parseArgs(argv) {
  const opts = { baseURL: 'http://127.0.0.1:8080/v1', model: 'stories', prompt: 'Once upon a time', maxTokens: 24,
    apiKey: process.env.OPENAI_API_KEY || 'none' };
  for (let i = 0; i < argv.length; i++) {
    const next = () => argv[++i];
    switch (argv[i]) {
      case '--base-url': opts.baseURL = next(); break;
      case '--model': opts.model = next(); break;
      case '--prompt': opts.prompt = next(); break;
      case '--max-tokens': opts.maxTokens = Number(next()); break;
      case '--api-key': opts.apiKey = next(); break;
      default: throw new Error(`unknown flag ${argv[i]}`);
    }
  }
  return opts;
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const client = new OpenAI({ baseURL: opts.baseURL, apiKey: opts.apiKey, maxRetries: 0 });
  const messages = [{ role: 'user', content: opts.prompt }];
  const common = { model: opts.model, max_tokens: opts.maxTokens, temperature: 0 };
  const out = {};

  const chat = await client.chat.completions.create({ ...common, messages });
  out.chat = { text: chat.choices[0].message.content, finish_reason: chat.choices[0].finish_reason, usage: chat.usage };

  const chatStream = await client.chat.completions.create({ ...common, messages, stream: true, stream_options: { include_usage: true } });
  out.chat_stream = { text: '', finish_reason: null, usage: null, chunks: 0 };
  for await (const chunk of chatStream) {
    out.chat_stream.chunks++;
    if (chunk.usage) out.chat_stream.usage = chunk.usage;
    for (const c of chunk.choices) {
      out.chat_stream.text += c.delta.content ?? '';
      if (c.finish_reason) out.chat_stream.finish_reason = c.finish_reason;
    }
  }

  const completion = await client.completions.create({ ...common, prompt: opts.prompt });
  out.completion = { text: completion.choices[0].text, finish_reason: completion.choices[0].finish_reason, usage: completion.usage };

  const completionStream = await client.completions.create({ ...common, prompt: opts.prompt, stream: true, stream_options: { include_usage: true } });
  out.completion_stream = { text: '', finish_reason: null, usage: null, chunks: 0 };
  for await (const chunk of completionStream) {
    out.completion_stream.chunks++;
    if (chunk.usage) out.completion_stream.usage = chunk.usage;
    for (const c of chunk.choices) {
      out.completion_stream.text += c.text ?? '';
      if (c.finish_reason) out.completion_stream.finish_reason = c.finish_reason;
    }
  }

  const texts = [opts.prompt, 'The cat sat on the mat.'];
  const emb = await client.embeddings.create({ model: opts.model, input: texts });
  const embFloat = await client.embeddings.create({ model: opts.model, input: texts, encoding_format: 'float' });
  out.embeddings = { base64: emb.data.map((d) => Array.from(d.embedding)), float: embFloat.data.map((d) => d.embedding),
    usage: emb.usage };

  // An unknown model: the client raises its NotFoundError with the body.
  try {
    await client.chat.completions.create({ ...common, model: 'no-such-model', messages });
    out.not_found = null;
  } catch (err) {
    out.not_found = { status: err.status, type: err.type, code: err.code, class: err.constructor.name };
  }

  const models = await client.models.list();
  out.models = models.data.map((m) => m.id);
  process.stdout.write(JSON.stringify(out) + '\n');
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
