#!/bin/sh
# Shows the raw server-sent events of a streamed chat completion from
# corelm's gateway: one "data: {...}" frame per chunk, the usage chunk,
# then "data: [DONE]".
#
#   clients/curl/sse.sh [BASE_URL] [MODEL] [PROMPT]
#   clients/curl/sse.sh http://127.0.0.1:8080 stories "Once upon a time"
#
# CORELM_GATEWAY_TOKEN, when set, is sent as the bearer token.
set -eu
base=${1:-http://127.0.0.1:8080}
model=${2:-stories}
prompt=${3:-Once upon a time}
auth=""
if [ -n "${CORELM_GATEWAY_TOKEN:-}" ]; then
	auth="Authorization: Bearer $CORELM_GATEWAY_TOKEN"
fi
# -N: no buffering, each frame shows as it arrives. (The prompt is put in
# the JSON as it is: keep it free of quotes and backslashes.)
exec curl -sS -N --fail-with-body ${auth:+-H "$auth"} -H 'Content-Type: application/json' \
	"$base/v1/chat/completions" -d @- <<JSON
{"model": "$model", "messages": [{"role": "user", "content": "$prompt"}],
 "max_tokens": 16, "temperature": 0, "stream": true, "stream_options": {"include_usage": true}}
JSON
