package telemetry

import "go.opentelemetry.io/otel/attribute"

// The OpenTelemetry GenAI semantic-convention keys corelm sets. The Go
// semconv packages dropped their gen_ai.* constants after semconv/v1.41.0;
// these few are spelled out here (checked against v1.41.0's) rather than
// pinning an old semconv package for them.
const (
	keyOperationName        = attribute.Key("gen_ai.operation.name")
	keyProviderName         = attribute.Key("gen_ai.provider.name")
	keyRequestModel         = attribute.Key("gen_ai.request.model")
	keyRequestMaxTokens     = attribute.Key("gen_ai.request.max_tokens")
	keyRequestTemperature   = attribute.Key("gen_ai.request.temperature")
	keyRequestTopP          = attribute.Key("gen_ai.request.top_p")
	keyRequestTopK          = attribute.Key("gen_ai.request.top_k")
	keyRequestSeed          = attribute.Key("gen_ai.request.seed")
	keyUsageInputTokens     = attribute.Key("gen_ai.usage.input_tokens")
	keyUsageOutputTokens    = attribute.Key("gen_ai.usage.output_tokens")
	keyUsageCacheReadTokens = attribute.Key("gen_ai.usage.cache_read.input_tokens")
	keyFinishReasons        = attribute.Key("gen_ai.response.finish_reasons")
	keyTokenType            = attribute.Key("gen_ai.token.type")
	keyErrorType            = attribute.Key("error.type")
)

// corelm's own keys.
const (
	keyRequestID    = attribute.Key("corelm.request_id")
	keyTraceLevel   = attribute.Key("corelm.trace_level")
	keyQueueNS      = attribute.Key("corelm.queue_ns")
	keyTTFTNS       = attribute.Key("corelm.time_to_first_token_ns")
	keyPrefillNS    = attribute.Key("corelm.prefill_ns")
	keyDecodeNS     = attribute.Key("corelm.decode_ns")
	keyCachedTokens = attribute.Key("corelm.cached_tokens")
	keySteps        = attribute.Key("corelm.steps")
	keyStopSequence = attribute.Key("corelm.stop_sequence")
	keyConstraint   = attribute.Key("corelm.constraint")
	keyOutputType   = attribute.Key("gen_ai.output.type")
	keyStepIndex    = attribute.Key("corelm.step.index")
	keyStepSeqs     = attribute.Key("corelm.step.seqs")
	keyStepDecode   = attribute.Key("corelm.step.decode_tokens")
	keyStepPrefill  = attribute.Key("corelm.step.prefill_tokens")
	keyStepKind     = attribute.Key("corelm.step.kind")
	keyStepLinked   = attribute.Key("corelm.step.traced_requests")
	keyLayer        = attribute.Key("corelm.layer")
	keyModel        = attribute.Key("corelm.model")
)

// Operation names (gen_ai.operation.name) of corelm's generations.
const (
	OperationChat           = "chat"
	OperationTextCompletion = "text_completion"
	OperationEmbeddings     = "embeddings"
)

// providerName is corelm's gen_ai.provider.name.
const providerName = "corelm"

// The values of gen_ai.token.type.
var (
	tokenInput  = keyTokenType.String("input")
	tokenOutput = keyTokenType.String("output")
)
