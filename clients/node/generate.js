#!/usr/bin/env node
// Streams one generation from corelm's InferenceService and prints the text
// as it arrives.
//
//   npm ci
//   node generate.js --addr 127.0.0.1:7071 --model stories --prompt "Once upon a time"
//
// Flags: --addr, --model, --prompt, --max-tokens, --temperature, --seed,
// --token (bearer token), --bidi (use the bidirectional Generate call
// instead of GenerateStream), --json (print one JSON summary instead of the
// text: ids, text, final frame).
'use strict';

const path = require('path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const PROTO_DIR = process.env.CORELM_PROTO_DIR || path.resolve(__dirname, '..', '..', 'proto');

function parseArgs(argv) {
  const opts = {
    addr: '127.0.0.1:7071', model: 'stories', prompt: 'Once upon a time',
    maxTokens: 64, temperature: undefined, seed: undefined, token: process.env.CORELM_AUTH_TOKEN || '',
    bidi: false, json: false,
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const next = () => {
      if (i + 1 >= argv.length) throw new Error(`${a} needs a value`);
      return argv[++i];
    };
    switch (a) {
      case '--addr': opts.addr = next(); break;
      case '--model': opts.model = next(); break;
      case '--prompt': opts.prompt = next(); break;
      case '--max-tokens': opts.maxTokens = Number(next()); break;
      case '--temperature': opts.temperature = Number(next()); break;
      case '--seed': opts.seed = next(); break;
      case '--token': opts.token = next(); break;
      case '--bidi': opts.bidi = true; break;
      case '--json': opts.json = true; break;
      default: throw new Error(`unknown flag ${a}`);
    }
  }
  return opts;
}

function loadService() {
  const def = protoLoader.loadSync('corelm/v1/inference.proto', {
    includeDirs: [PROTO_DIR],
    keepCase: true, // field names as in the .proto: request_id, max_tokens, ...
    longs: String,
    enums: String,
    defaults: true,
    oneofs: true, // the set member of a oneof is named in e.g. resp.frame
  });
  return grpc.loadPackageDefinition(def).corelm.v1.InferenceService;
}

function startRequest(opts) {
  const req = {
    model_id: opts.model,
    text: opts.prompt,
    max_tokens: opts.maxTokens,
    sampling: {},
  };
  if (opts.temperature !== undefined) req.sampling.temperature = opts.temperature;
  if (opts.seed !== undefined) req.sampling.seed = opts.seed;
  return req;
}

// generate runs one generation and resolves with { ids, text, final }.
// onText receives each text piece as it arrives.
function generate(client, opts, onText) {
  const md = new grpc.Metadata();
  if (opts.token) md.set('authorization', `Bearer ${opts.token}`);
  return new Promise((resolve, reject) => {
    const out = { ids: [], text: '', final: null };
    const onFrame = (resp) => {
      if (resp.frame === 'token') {
        if (resp.token.id >= 0) out.ids.push(resp.token.id); // servers before GenerateFinal.text sent id -1
        out.text += resp.token.text;
        if (onText) onText(resp.token.text);
      } else if (resp.frame === 'final') {
        // Output held back to the end (an unfinished stop-string prefix or character).
        if (resp.final.text) {
          out.text += resp.final.text;
          if (onText) onText(resp.final.text);
        }
        out.final = resp.final;
      }
    };
    let call;
    if (opts.bidi) {
      call = client.Generate(md);
      const id = 'req-1';
      call.on('data', (resp) => {
        if (resp.request_id !== id) return;
        onFrame(resp);
        if (resp.frame === 'final') call.end(); // no more generations on this stream
      });
      call.write({ start: Object.assign({ request_id: id }, startRequest(opts)) });
    } else {
      call = client.GenerateStream(startRequest(opts), md);
      call.on('data', onFrame);
    }
    call.on('error', reject);
    call.on('end', () => {
      if (!out.final) reject(new Error('stream ended without a final frame'));
      else resolve(out);
    });
  });
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const InferenceService = loadService();
  const client = new InferenceService(opts.addr, grpc.credentials.createInsecure());
  try {
    const out = await generate(client, opts, opts.json ? null : (t) => process.stdout.write(t));
    if (opts.json) {
      process.stdout.write(JSON.stringify(out) + '\n');
    } else {
      const f = out.final;
      process.stdout.write(`\n[${f.finish_reason}: ${f.usage.completion_tokens} tokens]\n`);
    }
  } finally {
    client.close();
  }
}

module.exports = { generate, loadService };

if (require.main === module) {
  main().catch((err) => {
    console.error(`corelm-generate: ${err.message}`);
    process.exit(1);
  });
}
