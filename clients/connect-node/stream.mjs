#!/usr/bin/env node
// Streams one GenerateStream from corelm's HTTP gateway with
// @connectrpc/connect-web (fetch, HTTP/1.1), over the Connect protocol
// (JSON) and over gRPC-Web (binary), and prints what each gave as one JSON
// object. No generated code: the service is read from a protobuf
// descriptor set of proto/ (see README.md).
//
//   node stream.mjs --base-url http://127.0.0.1:8080 --descriptors corelm.binpb \
//     --model stories --prompt "Once upon a time" --max-tokens 16
import { readFileSync } from 'node:fs';
import { createClient } from '@connectrpc/connect';
import { createConnectTransport, createGrpcWebTransport } from '@connectrpc/connect-web';
import { createFileRegistry, fromBinary } from '@bufbuild/protobuf';
import { FileDescriptorSetSchema } from '@bufbuild/protobuf/wkt';

function parseArgs(argv) {
  const opts = { baseUrl: 'http://127.0.0.1:8080', descriptors: 'corelm.binpb', model: 'stories', prompt: 'Once upon a time', maxTokens: 16 };
  for (let i = 0; i < argv.length; i++) {
    const next = () => argv[++i];
    switch (argv[i]) {
      case '--base-url': opts.baseUrl = next(); break;
      case '--descriptors': opts.descriptors = next(); break;
      case '--model': opts.model = next(); break;
      case '--prompt': opts.prompt = next(); break;
      case '--max-tokens': opts.maxTokens = Number(next()); break;
      default: throw new Error(`unknown flag ${argv[i]}`);
    }
  }
  return opts;
}

async function stream(service, transport, opts) {
  const client = createClient(service, transport);
  const out = { text: '', tokens: 0, finish_reason: null, completion_tokens: null };
  const req = { modelId: opts.model, prompt: { case: 'text', value: opts.prompt }, maxTokens: opts.maxTokens,
    sampling: { temperature: 0 } };
  for await (const resp of client.generateStream(req)) {
    if (resp.frame.case === 'token') {
      out.tokens++;
      out.text += resp.frame.value.text;
    } else if (resp.frame.case === 'final') {
      const f = resp.frame.value;
      out.text += f.text; // held back to the end, if anything
      out.finish_reason = service.file.enums.find((e) => e.typeName === 'corelm.v1.FinishReason').values
        .find((v) => v.number === f.finishReason).name;
      out.completion_tokens = f.usage.completionTokens;
    }
  }
  return out;
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const registry = createFileRegistry(fromBinary(FileDescriptorSetSchema, readFileSync(opts.descriptors)));
  const service = registry.getService('corelm.v1.InferenceService');
  if (!service) throw new Error(`no corelm.v1.InferenceService in ${opts.descriptors}`);
  const out = {
    connect: await stream(service, createConnectTransport({ baseUrl: opts.baseUrl }), opts),
    grpc_web: await stream(service, createGrpcWebTransport({ baseUrl: opts.baseUrl, useBinaryFormat: true }), opts),
  };
  process.stdout.write(JSON.stringify(out) + '\n');
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
