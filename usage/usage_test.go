package usage

import (
	"bytes"
	"errors"
	"math/rand"
	"strconv"
	"strings"
	"testing"

	"github.com/tidwall/gjson"
)

// Recorded answers, in the shapes the providers really send (from their
// API references and captured traffic), pretty-printing included.

// openAIChat is an OpenAI chat completion (POST /v1/chat/completions).
const openAIChat = `{
  "id": "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT",
  "object": "chat.completion",
  "created": 1741569952,
  "model": "gpt-4.1-2025-04-14",
  "choices": [
    {
      "index": 0,
      "message": {
        "role": "assistant",
        "content": "Hello! How can I assist you today?",
        "refusal": null,
        "annotations": []
      },
      "logprobs": null,
      "finish_reason": "stop"
    }
  ],
  "usage": {
    "prompt_tokens": 19,
    "completion_tokens": 10,
    "total_tokens": 29,
    "prompt_tokens_details": {
      "cached_tokens": 0,
      "audio_tokens": 0
    },
    "completion_tokens_details": {
      "reasoning_tokens": 0,
      "audio_tokens": 0,
      "accepted_prediction_tokens": 0,
      "rejected_prediction_tokens": 0
    }
  },
  "service_tier": "default"
}
`

// openAIResponse is an OpenAI Responses API answer (POST /v1/responses).
const openAIResponse = `{
  "id": "resp_67ccd2bed1ec8190b14f964abc0542670bb6a6b452d3795b",
  "object": "response",
  "created_at": 1741476542,
  "status": "completed",
  "error": null,
  "incomplete_details": null,
  "instructions": null,
  "max_output_tokens": null,
  "model": "gpt-4.1-2025-04-14",
  "output": [
    {
      "type": "message",
      "id": "msg_67ccd2bf17f0819081ff3bb2cf6508e60bb6a6b452d3795b",
      "status": "completed",
      "role": "assistant",
      "content": [
        {
          "type": "output_text",
          "text": "In a peaceful grove beneath a silver moon, a unicorn named Lumina discovered a hidden pool that reflected the stars.",
          "annotations": []
        }
      ]
    }
  ],
  "parallel_tool_calls": true,
  "previous_response_id": null,
  "reasoning": {
    "effort": null,
    "summary": null
  },
  "store": true,
  "temperature": 1.0,
  "text": {
    "format": {
      "type": "text"
    }
  },
  "tool_choice": "auto",
  "tools": [],
  "top_p": 1.0,
  "truncation": "disabled",
  "usage": {
    "input_tokens": 36,
    "input_tokens_details": {
      "cached_tokens": 0
    },
    "output_tokens": 87,
    "output_tokens_details": {
      "reasoning_tokens": 0
    },
    "total_tokens": 123
  },
  "user": null,
  "metadata": {}
}`

// anthropicMessage is an Anthropic Messages API answer (POST /v1/messages).
const anthropicMessage = `{"id":"msg_013Zva2CMHLNnXjNJJKqJ2EF","type":"message","role":"assistant","model":"claude-3-7-sonnet-20250219","content":[{"type":"text","text":"Hi! My name is Claude."}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":2095,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":503,"service_tier":"standard"}}`

// anthropicCached is an Anthropic answer whose prompt was mostly read
// from and written to the prompt cache.
const anthropicCached = `{"id":"msg_01XFDUDYJgAACzvnptvVoYEL","type":"message","role":"assistant","model":"claude-sonnet-4-20250514","content":[{"type":"text","text":"Done."}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":4,"cache_creation_input_tokens":1021,"cache_read_input_tokens":28103,"cache_creation":{"ephemeral_5m_input_tokens":1021,"ephemeral_1h_input_tokens":0},"output_tokens":219,"service_tier":"standard"}}`

// geminiGenerate is a Gemini 2.5 generateContent answer with thinking
// (POST /v1beta/models/gemini-2.5-flash:generateContent).
const geminiGenerate = `{
  "candidates": [
    {
      "content": {
        "parts": [
          {
            "text": "AI learns patterns from data to make predictions or decisions."
          }
        ],
        "role": "model"
      },
      "finishReason": "STOP",
      "index": 0
    }
  ],
  "usageMetadata": {
    "promptTokenCount": 8,
    "candidatesTokenCount": 11,
    "totalTokenCount": 720,
    "promptTokensDetails": [
      {
        "modality": "TEXT",
        "tokenCount": 8
      }
    ],
    "thoughtsTokenCount": 701
  },
  "modelVersion": "gemini-2.5-flash",
  "responseId": "fK9BaK7fMe6M1dkP5L2Y4Qs"
}
`

// openAIEmbedding is an OpenAI embeddings answer: prompt tokens only.
const openAIEmbedding = `{
  "object": "list",
  "data": [
    {
      "object": "embedding",
      "index": 0,
      "embedding": [
        -0.006929283495992422,
        -0.005336422007530928,
        -4.547132266452536e-05,
        -0.024047505110502243
      ]
    }
  ],
  "model": "text-embedding-3-small",
  "usage": {
    "prompt_tokens": 5,
    "total_tokens": 5
  }
}
`

// geminiArray is Gemini's streamGenerateContent without alt=sse: a JSON
// array of chunks, the last one holding the final counts.
const geminiArray = "[{\n  \"candidates\": [\n    {\n      \"content\": {\n        \"parts\": [\n          {\n            \"text\": \"The\"\n          }\n        ],\n        \"role\": \"model\"\n      },\n      \"index\": 0\n    }\n  ],\n  \"usageMetadata\": {\n    \"promptTokenCount\": 7,\n    \"totalTokenCount\": 7,\n    \"promptTokensDetails\": [\n      {\n        \"modality\": \"TEXT\",\n        \"tokenCount\": 7\n      }\n    ]\n  },\n  \"modelVersion\": \"gemini-2.0-flash\"\n}\n,\r\n{\n  \"candidates\": [\n    {\n      \"content\": {\n        \"parts\": [\n          {\n            \"text\": \" quick brown fox jumps over the lazy dog.\"\n          }\n        ],\n        \"role\": \"model\"\n      },\n      \"finishReason\": \"STOP\",\n      \"index\": 0\n    }\n  ],\n  \"usageMetadata\": {\n    \"promptTokenCount\": 7,\n    \"candidatesTokenCount\": 10,\n    \"totalTokenCount\": 17,\n    \"promptTokensDetails\": [\n      {\n        \"modality\": \"TEXT\",\n        \"tokenCount\": 7\n      }\n    ],\n    \"candidatesTokensDetails\": [\n      {\n        \"modality\": \"TEXT\",\n        \"tokenCount\": 10\n      }\n    ]\n  },\n  \"modelVersion\": \"gemini-2.0-flash\"\n}\n]"

// openAIImage is an images/generations answer: no usage at all.
const openAIImage = `{"created":1713833628,"data":[{"b64_json":"iVBORw0KGgo..."}]}`

func TestFromJSON(t *testing.T) {
	tests := []struct {
		name   string
		body   string
		want   Usage
		wantOK bool
	}{
		{"openai chat completion", openAIChat, Usage{Prompt: 19, Completion: 10}, true},
		{"responses api", openAIResponse, Usage{Prompt: 36, Completion: 87}, true},
		{"anthropic message", anthropicMessage, Usage{Prompt: 2095, Completion: 503}, true},
		// Claude Code's requests: most of the prompt comes from the cache.
		{"anthropic message with prompt caching", anthropicCached, Usage{Prompt: 4 + 1021 + 28103, Completion: 219, Cached: 28103}, true},
		{"openai chat, prompt partly cached", `{"usage":{"prompt_tokens":2006,"completion_tokens":300,"prompt_tokens_details":{"cached_tokens":1920}}}`,
			Usage{Prompt: 2006, Completion: 300, Cached: 1920}, true},
		{"responses api, input partly cached", `{"usage":{"input_tokens":2006,"output_tokens":300,"input_tokens_details":{"cached_tokens":1024}}}`,
			Usage{Prompt: 2006, Completion: 300, Cached: 1024}, true},
		{"deepseek cache hit", `{"usage":{"prompt_tokens":1000,"completion_tokens":5,"prompt_cache_hit_tokens":896,"prompt_cache_miss_tokens":104}}`,
			Usage{Prompt: 1000, Completion: 5, Cached: 896}, true},
		{"gemini cached content", `{"usageMetadata":{"promptTokenCount":4000,"cachedContentTokenCount":3500,"candidatesTokenCount":9}}`,
			Usage{Prompt: 4000, Completion: 9, Cached: 3500}, true},
		{"gemini generateContent with thoughts", geminiGenerate, Usage{Prompt: 8, Completion: 11 + 701}, true},
		{"gemini without thoughts", `{"candidates":[{"content":{"parts":[{"text":"Hello from the fake Gemini."}],"role":"model"},"finishReason":"STOP","index":0}],"usageMetadata":{"promptTokenCount":5,"candidatesTokenCount":7,"totalTokenCount":12},"modelVersion":"gemini-2.0-flash"}`, Usage{Prompt: 5, Completion: 7}, true},
		{"embeddings: prompt tokens only", openAIEmbedding, Usage{Prompt: 5}, true},
		{"gemini array-wrapped stream: the last chunk counts", geminiArray, Usage{Prompt: 7, Completion: 10}, true},
		{"empty array", `[]`, Usage{}, false},
		{"image answer without usage", openAIImage, Usage{}, false},
		{"usage null", `{"id":"x","object":"chat.completion","choices":[],"usage":null}`, Usage{}, false},
		{"usage without known fields", `{"usage":{"total_tokens":12}}`, Usage{}, false},
		{"invalid JSON: truncated", openAIChat[:200], Usage{}, false},
		{"invalid JSON: trailing garbage", `{"usage":{"prompt_tokens":1,"completion_tokens":2}}x`, Usage{}, false},
		{"invalid JSON: SSE text", "data: {\"usage\":{\"prompt_tokens\":1}}\n\n", Usage{}, false},
		{"empty", ``, Usage{}, false},
		{"scalar", `42`, Usage{}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := FromJSON([]byte(tc.body))
			if got != tc.want || ok != tc.wantOK {
				t.Errorf("FromJSON = %+v, %v; want %+v, %v", got, ok, tc.want, tc.wantOK)
			}
			if got.Total() != tc.want.Prompt+tc.want.Completion {
				t.Errorf("Total = %d", got.Total())
			}
		})
	}
}

// Recorded streams.

// openAIStreamUsage is an OpenAI chat stream asked for
// stream_options.include_usage: every chunk carries "usage":null, and a
// last chunk with empty choices carries the counts.
const openAIStreamUsage = `data: {"id":"chatcmpl-AyPnM1Dd9k1vYmnVQfaKlJ5ibu7Nq","object":"chat.completion.chunk","created":1738960860,"model":"gpt-4o-mini-2024-07-18","service_tier":"default","system_fingerprint":"fp_72ed7ab54c","choices":[{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}],"usage":null}

data: {"id":"chatcmpl-AyPnM1Dd9k1vYmnVQfaKlJ5ibu7Nq","object":"chat.completion.chunk","created":1738960860,"model":"gpt-4o-mini-2024-07-18","service_tier":"default","system_fingerprint":"fp_72ed7ab54c","choices":[{"index":0,"delta":{"content":"Hello"},"logprobs":null,"finish_reason":null}],"usage":null}

data: {"id":"chatcmpl-AyPnM1Dd9k1vYmnVQfaKlJ5ibu7Nq","object":"chat.completion.chunk","created":1738960860,"model":"gpt-4o-mini-2024-07-18","service_tier":"default","system_fingerprint":"fp_72ed7ab54c","choices":[{"index":0,"delta":{"content":"!"},"logprobs":null,"finish_reason":null}],"usage":null}

data: {"id":"chatcmpl-AyPnM1Dd9k1vYmnVQfaKlJ5ibu7Nq","object":"chat.completion.chunk","created":1738960860,"model":"gpt-4o-mini-2024-07-18","service_tier":"default","system_fingerprint":"fp_72ed7ab54c","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}],"usage":null}

data: {"id":"chatcmpl-AyPnM1Dd9k1vYmnVQfaKlJ5ibu7Nq","object":"chat.completion.chunk","created":1738960860,"model":"gpt-4o-mini-2024-07-18","service_tier":"default","system_fingerprint":"fp_72ed7ab54c","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}}}

data: [DONE]

`

// openAIUsageEvent is the usage-only event of openAIStreamUsage.
const openAIUsageEvent = `data: {"id":"chatcmpl-AyPnM1Dd9k1vYmnVQfaKlJ5ibu7Nq","object":"chat.completion.chunk","created":1738960860,"model":"gpt-4o-mini-2024-07-18","service_tier":"default","system_fingerprint":"fp_72ed7ab54c","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}}}

`

// openAIStreamPlain is the same stream as a client that did not ask for
// usage gets it.
const openAIStreamPlain = `data: {"id":"chatcmpl-AyPnM1Dd9k1vYmnVQfaKlJ5ibu7Nq","object":"chat.completion.chunk","created":1738960860,"model":"gpt-4o-mini-2024-07-18","service_tier":"default","system_fingerprint":"fp_72ed7ab54c","choices":[{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}]}

data: {"id":"chatcmpl-AyPnM1Dd9k1vYmnVQfaKlJ5ibu7Nq","object":"chat.completion.chunk","created":1738960860,"model":"gpt-4o-mini-2024-07-18","service_tier":"default","system_fingerprint":"fp_72ed7ab54c","choices":[{"index":0,"delta":{"content":"Hello"},"logprobs":null,"finish_reason":null}]}

data: {"id":"chatcmpl-AyPnM1Dd9k1vYmnVQfaKlJ5ibu7Nq","object":"chat.completion.chunk","created":1738960860,"model":"gpt-4o-mini-2024-07-18","service_tier":"default","system_fingerprint":"fp_72ed7ab54c","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}]}

data: [DONE]

`

// geminiSSE is Gemini's streamGenerateContent?alt=sse: CRLF line endings,
// every chunk with usageMetadata, the last one complete.
const geminiSSE = "data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"The\"}],\"role\": \"model\"},\"index\": 0}],\"usageMetadata\": {\"promptTokenCount\": 7,\"totalTokenCount\": 7,\"promptTokensDetails\": [{\"modality\": \"TEXT\",\"tokenCount\": 7}]},\"modelVersion\": \"gemini-2.0-flash\",\"responseId\": \"ZH9BaOuFMt2Y1dkPk6bq0Q4\"}\r\n\r\n" +
	"data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \" quick brown fox jumps over the lazy\"}],\"role\": \"model\"},\"index\": 0}],\"usageMetadata\": {\"promptTokenCount\": 7,\"totalTokenCount\": 7,\"promptTokensDetails\": [{\"modality\": \"TEXT\",\"tokenCount\": 7}]},\"modelVersion\": \"gemini-2.0-flash\",\"responseId\": \"ZH9BaOuFMt2Y1dkPk6bq0Q4\"}\r\n\r\n" +
	"data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \" dog.\\n\"}],\"role\": \"model\"},\"finishReason\": \"STOP\",\"index\": 0}],\"usageMetadata\": {\"promptTokenCount\": 7,\"candidatesTokenCount\": 10,\"totalTokenCount\": 17,\"promptTokensDetails\": [{\"modality\": \"TEXT\",\"tokenCount\": 7}],\"candidatesTokensDetails\": [{\"modality\": \"TEXT\",\"tokenCount\": 10}]},\"modelVersion\": \"gemini-2.0-flash\",\"responseId\": \"ZH9BaOuFMt2Y1dkPk6bq0Q4\"}\r\n\r\n"

// anthropicSSE is an Anthropic Messages stream (the API reference's).
const anthropicSSE = `event: message_start
data: {"type": "message_start", "message": {"id": "msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY", "type": "message", "role": "assistant", "content": [], "model": "claude-opus-4-1-20250805", "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": 25, "output_tokens": 1}}}

event: content_block_start
data: {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}

event: ping
data: {"type": "ping"}

event: content_block_delta
data: {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hello"}}

event: content_block_delta
data: {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "!"}}

event: content_block_stop
data: {"type": "content_block_stop", "index": 0}

event: message_delta
data: {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence":null}, "usage": {"output_tokens": 15}}

event: message_stop
data: {"type": "message_stop"}

`

// responsesSSE is an OpenAI Responses API stream (stream: true): the
// counts come in response.completed, under "response".
const responsesSSE = `event: response.created
data: {"type":"response.created","sequence_number":0,"response":{"id":"resp_67c9fdcecf488190bdd9a0409de3a1ec07b8b0ad4e5eb654","object":"response","created_at":1741290958,"status":"in_progress","error":null,"incomplete_details":null,"instructions":"You are a helpful assistant.","max_output_tokens":null,"model":"gpt-4.1-2025-04-14","output":[],"parallel_tool_calls":true,"previous_response_id":null,"reasoning":{"effort":null,"summary":null},"store":true,"temperature":1.0,"text":{"format":{"type":"text"}},"tool_choice":"auto","tools":[],"top_p":1.0,"truncation":"disabled","usage":null,"user":null,"metadata":{}}}

event: response.output_text.delta
data: {"type":"response.output_text.delta","sequence_number":4,"item_id":"msg_67c9fdcf37fc8190ba82116e33fb28c507b8b0ad4e5eb654","output_index":0,"content_index":0,"delta":"Hi"}

event: response.output_text.done
data: {"type":"response.output_text.done","sequence_number":20,"item_id":"msg_67c9fdcf37fc8190ba82116e33fb28c507b8b0ad4e5eb654","output_index":0,"content_index":0,"text":"Hi there! How can I assist you today?"}

event: response.completed
data: {"type":"response.completed","sequence_number":23,"response":{"id":"resp_67c9fdcecf488190bdd9a0409de3a1ec07b8b0ad4e5eb654","object":"response","created_at":1741290958,"status":"completed","error":null,"incomplete_details":null,"instructions":"You are a helpful assistant.","max_output_tokens":null,"model":"gpt-4.1-2025-04-14","output":[{"id":"msg_67c9fdcf37fc8190ba82116e33fb28c507b8b0ad4e5eb654","type":"message","status":"completed","role":"assistant","content":[{"type":"output_text","text":"Hi there! How can I assist you today?","annotations":[]}]}],"parallel_tool_calls":true,"previous_response_id":null,"reasoning":{"effort":null,"summary":null},"store":true,"temperature":1.0,"text":{"format":{"type":"text"}},"tool_choice":"auto","tools":[],"top_p":1.0,"truncation":"disabled","usage":{"input_tokens":37,"output_tokens":11,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":48},"user":null,"metadata":{}}}

`

// write feeds data to w in pieces of size (0: whole).
func write(t testing.TB, w interface{ Write([]byte) (int, error) }, data []byte, size int) {
	t.Helper()
	if size <= 0 {
		size = len(data)
	}
	for len(data) > 0 {
		n := min(size, len(data))
		if m, err := w.Write(data[:n]); m != n || err != nil {
			t.Fatalf("Write = %d, %v; want %d, nil", m, err, n)
		}
		data = data[n:]
	}
}

// dataBytes is what StreamedBytes must report: of every complete data
// line, the text it carries when it is a JSON event (OpenAI delta content,
// Gemini part text, Anthropic delta text, Responses output_text deltas),
// else the trimmed data.
func dataBytes(stream string) int64 {
	var n int64
	lines := strings.Split(stream, "\n")
	for _, l := range lines[:len(lines)-1] { // the last has no newline
		d, ok := strings.CutPrefix(strings.TrimRight(l, "\r"), "data:")
		if !ok {
			continue
		}
		d = strings.TrimSpace(d)
		if !strings.HasPrefix(d, "{") || !gjson.Valid(d) {
			n += int64(len(d))
			continue
		}
		o := gjson.Parse(d)
		n += int64(len(o.Get("choices.0.delta.content").String()) + len(o.Get("candidates.0.content.parts.0.text").String()) +
			len(o.Get("delta.text").String()))
		if o.Get("type").String() == "response.output_text.delta" {
			n += int64(len(o.Get("delta").String()))
		}
	}
	return n
}

func TestStream(t *testing.T) {
	long := "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":999,\"completion_tokens\":999},\"pad\":\"" +
		strings.Repeat("x", 1<<20) + "\"}\n\n"
	tests := []struct {
		name      string
		stream    string
		want      Usage
		found     bool
		wantBytes int64 // -1: dataBytes(stream)
	}{
		{"openai with usage chunk", openAIStreamUsage, Usage{Prompt: 9, Completion: 2}, true, -1},
		{"openai without usage", openAIStreamPlain, Usage{}, false, -1},
		{"gemini alt=sse, CRLF: the last usageMetadata wins", geminiSSE, Usage{Prompt: 7, Completion: 10}, true, -1},
		{"anthropic message_start + message_delta", anthropicSSE, Usage{Prompt: 25, Completion: 15}, true, -1},
		{"anthropic with prompt caching", strings.Replace(anthropicSSE, `"usage": {"input_tokens": 25, "output_tokens": 1}`,
			`"usage": {"input_tokens": 25, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 2000, "output_tokens": 1}`, 1),
			Usage{Prompt: 2025, Completion: 15, Cached: 2000}, true, -1},
		{"responses api: response.completed", responsesSSE, Usage{Prompt: 37, Completion: 11}, true, -1},
		{"openai with CRLF line endings", strings.ReplaceAll(openAIStreamUsage, "\n", "\r\n"), Usage{Prompt: 9, Completion: 2}, true, -1},
		{"data without a space", "data:{\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4}}\n\n", Usage{Prompt: 3, Completion: 4}, true, -1},
		{"no final newline: the last line is not read", "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4}}", Usage{}, false, 0},
		{"comments and other fields ignored", ": keep-alive\nevent: x\nid: 3\nretry: 10\ndata: {\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2}}\n\n", Usage{Prompt: 1, Completion: 2}, true, -1},
		{"broken JSON skipped", "data: {\"usage\":{\"prompt_tokens\":1\n\ndata: [DONE]\n\n", Usage{}, false, -1},
		// A line over 1 MiB is skipped whatever the chunking; the stream
		// goes on being read after it.
		{"line over 1 MiB skipped", long + openAIStreamPlain, Usage{}, false, int64(len(long)-len("data:\n\n")) + dataBytes(openAIStreamPlain)},
		{"line over 1 MiB then usage", long + openAIStreamUsage, Usage{Prompt: 9, Completion: 2}, true, int64(len(long)-len("data:\n\n")) + dataBytes(openAIStreamUsage)},
	}
	for _, tc := range tests {
		if tc.wantBytes < 0 {
			tc.wantBytes = dataBytes(tc.stream)
		}
		sizes := []int{0, 1, 7, 4096, 32 << 10}
		if len(tc.stream) > 1<<20 {
			sizes = []int{0, 7, 1000, 32 << 10, 1 << 20, 1<<20 + 3}
		}
		for _, size := range sizes {
			t.Run(tc.name+"/"+itoa(size), func(t *testing.T) {
				var s Stream
				write(t, &s, []byte(tc.stream), size)
				if s.Usage != tc.want || s.Found != tc.found {
					t.Errorf("Usage = %+v, Found %v; want %+v, %v", s.Usage, s.Found, tc.want, tc.found)
				}
				if got := s.StreamedBytes(); got != tc.wantBytes {
					t.Errorf("StreamedBytes = %d, want %d", got, tc.wantBytes)
				}
				if cap(s.line) > 2*maxLine {
					t.Errorf("kept a line buffer of %d bytes, more than maxLine", cap(s.line))
				}
			})
		}
	}
}

// TestStreamEverySplit feeds each recorded stream in two pieces split at
// every offset, and in random pieces.
func TestStreamEverySplit(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	for _, stream := range []string{openAIStreamUsage, geminiSSE, anthropicSSE, responsesSSE} {
		var whole Stream
		write(t, &whole, []byte(stream), 0)
		for i := 0; i <= len(stream); i++ {
			var s Stream
			s.Write([]byte(stream[:i]))
			s.Write([]byte(stream[i:]))
			if s.Usage != whole.Usage || s.Found != whole.Found || s.bytes != whole.bytes {
				t.Fatalf("split at %d: %+v %v %d; whole %+v %v %d", i, s.Usage, s.Found, s.bytes, whole.Usage, whole.Found, whole.bytes)
			}
		}
		for n := 0; n < 50; n++ {
			var s Stream
			for _, p := range randomPieces(rng, []byte(stream)) {
				s.Write(p)
			}
			if s.Usage != whole.Usage || s.Found != whole.Found || s.bytes != whole.bytes {
				t.Fatalf("random pieces: %+v %v; whole %+v %v", s.Usage, s.Found, whole.Usage, whole.Found)
			}
		}
	}
}

func randomPieces(rng *rand.Rand, b []byte) [][]byte {
	var out [][]byte
	for len(b) > 0 {
		n := min(1+rng.Intn(64), len(b))
		out = append(out, b[:n])
		b = b[n:]
	}
	return out
}

func itoa(n int) string {
	if n == 0 {
		return "whole"
	}
	return strconv.Itoa(n)
}

func TestEstimate(t *testing.T) {
	tests := []struct {
		req, ans int64
		want     Usage
	}{
		{0, 0, Usage{Prompt: 0, Completion: 0, Estimated: true}},
		{1, 1, Usage{Prompt: 1, Completion: 1, Estimated: true}},
		{3, 4, Usage{Prompt: 1, Completion: 1, Estimated: true}},
		{4, 5, Usage{Prompt: 1, Completion: 2, Estimated: true}},
		{8, 9, Usage{Prompt: 2, Completion: 3, Estimated: true}},
		{400, 1203, Usage{Prompt: 100, Completion: 301, Estimated: true}},
		{1 << 40, 1<<40 + 1, Usage{Prompt: 1 << 38, Completion: 1<<38 + 1, Estimated: true}},
	}
	for _, tc := range tests {
		if got := Estimate(tc.req, tc.ans); got != tc.want {
			t.Errorf("Estimate(%d, %d) = %+v, want %+v", tc.req, tc.ans, got, tc.want)
		}
	}
}

// inserted reports whether out is in with insert added at one place.
func inserted(in, out []byte, insert string) bool {
	if len(out) != len(in)+len(insert) {
		return false
	}
	for i := 0; i <= len(in); i++ {
		if bytes.Equal(out[:i], in[:i]) && string(out[i:i+len(insert)]) == insert && bytes.Equal(out[i+len(insert):], in[i:]) {
			return true
		}
		if i < len(in) && out[i] != in[i] {
			return false
		}
	}
	return false
}

// insertions are the bytes AskForUsage may add.
var insertions = []string{`"stream_options":{"include_usage":true},`, `"stream_options":{"include_usage":true}`, `"include_usage":true,`, `"include_usage":true`}

const chatRequest = `{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Say \"hi\" — ✓ \u00e9"}],"temperature":0.2,"stream":true}`

// chatRequestPretty is the same request as the OpenAI Python SDK's
// debug log shows it, pretty-printed.
const chatRequestPretty = "{\n  \"messages\": [\n    {\n      \"role\": \"user\",\n      \"content\": \"Hello!\"\n    }\n  ],\n  \"model\": \"gpt-4o\",\n  \"stream\": true\n}\n"

func TestAskForUsage(t *testing.T) {
	tests := []struct {
		name   string
		body   string
		insert string // the bytes added; "" for none
	}{
		{"stream without options", chatRequest, `"stream_options":{"include_usage":true},`},
		{"pretty-printed", chatRequestPretty, `"stream_options":{"include_usage":true},`},
		{"leading whitespace", " \r\n\t" + chatRequest, `"stream_options":{"include_usage":true},`},
		{"stream first", `{"stream":true,"model":"m"}`, `"stream_options":{"include_usage":true},`},
		{"empty options", `{"model":"m","stream":true,"stream_options":{}}`, `"include_usage":true`},
		{"empty options with spaces", `{"model":"m","stream":true,"stream_options": { } }`, `"include_usage":true`},
		{"other options", `{"model":"m","stream":true,"stream_options":{"x":1}}`, `"include_usage":true,`},
		{"other options pretty", "{\"stream\": true, \"stream_options\": {\n  \"x\": [1, {\"y\": 2}]\n}}", `"include_usage":true,`},
		{"nested include_usage elsewhere does not count", `{"stream":true,"metadata":{"include_usage":true}}`, `"stream_options":{"include_usage":true},`},
		{"include_usage true", `{"model":"m","stream":true,"stream_options":{"include_usage":true}}`, ""},
		{"include_usage false", `{"model":"m","stream":true,"stream_options":{"include_usage":false}}`, ""},
		{"include_usage false with others", `{"model":"m","stream":true,"stream_options":{"x":1,"include_usage":false}}`, ""},
		{"stream false", `{"model":"m","stream":false,"messages":[]}`, ""},
		{"stream absent", `{"model":"m","messages":[]}`, ""},
		{"stream nested only", `{"model":"m","extra":{"stream":true}}`, ""},
		{"stream_options not an object", `{"model":"m","stream":true,"stream_options":[1]}`, ""},
		// Bodies are not validated as a whole: broken ones go on unchanged
		// (this one made AskForUsage panic: opts.Raw was "{").
		{"truncated options", `{"model":"gpt-4o-mini","stream":true,"stream_options":{`, ""},
		{"truncated inside options", `{"model":"gpt-4o-mini","stream":true,"stream_options":{"x":`, ""},
		{"fuzzer's crasher", "{\"stream\"At0000\"stream_options\"A{", ""},
		{"array body", `[{"model":"m","stream":true}]`, ""},
		{"string body", `"stream"`, ""},
		{"null body", `null`, ""},
		{"empty body", ``, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in := []byte(tc.body)
			orig := append([]byte(nil), in...)
			out, added := AskForUsage(in)
			if !bytes.Equal(in, orig) {
				t.Fatalf("AskForUsage modified its input")
			}
			if tc.insert == "" {
				if added || !bytes.Equal(out, in) {
					t.Errorf("AskForUsage = %q, %v; want the body unchanged, false", out, added)
				}
				return
			}
			if !added {
				t.Errorf("added = false, want true")
			}
			if !inserted(in, out, tc.insert) {
				t.Errorf("output is not the input with %q inserted:\n in %s\nout %s", tc.insert, in, out)
			}
			if !gjson.ValidBytes(out) {
				t.Fatalf("output is not valid JSON: %s", out)
			}
			if v := gjson.GetBytes(out, "stream_options.include_usage"); v.Type != gjson.True {
				t.Errorf("stream_options.include_usage = %s, want true", v.Raw)
			}
			// The client's other options are still there.
			if x := gjson.GetBytes(in, "stream_options.x"); x.Exists() && gjson.GetBytes(out, "stream_options.x").Raw != x.Raw {
				t.Errorf("stream_options.x lost: %s", out)
			}
			if again, added2 := AskForUsage(out); added2 || !bytes.Equal(again, out) {
				t.Errorf("asking twice changed the body again: %s", again)
			}
		})
	}
}

// stripAll runs in through StripUsage in the given pieces.
func stripAll(t testing.TB, pieces ...[]byte) []byte {
	var out bytes.Buffer
	s := &StripUsage{W: &out}
	for _, p := range pieces {
		if n, err := s.Write(p); n != len(p) || err != nil {
			t.Fatalf("Write = %d, %v", n, err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

func TestStripUsage(t *testing.T) {
	stripped := strings.Replace(openAIStreamUsage, openAIUsageEvent, "", 1)
	if stripped == openAIStreamUsage {
		t.Fatal("test stream lacks its usage event")
	}
	crlf := strings.ReplaceAll(openAIStreamUsage, "\n", "\r\n")
	tests := []struct {
		name, in, want string
	}{
		{"openai stream: the usage chunk goes", openAIStreamUsage, stripped},
		{"CRLF", crlf, strings.ReplaceAll(stripped, "\n", "\r\n")},
		{"without usage: untouched", openAIStreamPlain, openAIStreamPlain},
		{"gemini and anthropic streams untouched", geminiSSE + anthropicSSE, geminiSSE + anthropicSSE},
		{"responses stream untouched", responsesSSE, responsesSSE},
		{"usage with choices kept", "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2}}\n\n", "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2}}\n\n"},
		{"done kept", "data: [DONE]\n\n", "data: [DONE]\n\n"},
		{"trailing partial event flushed on Close", openAIStreamPlain + "data: {\"choices\":[{\"delta\":{\"content\":\"x\"}}]}", openAIStreamPlain + "data: {\"choices\":[{\"delta\":{\"content\":\"x\"}}]}"},
		{"trailing partial usage event dropped on Close", openAIStreamPlain + strings.TrimSuffix(openAIUsageEvent, "\n"), openAIStreamPlain},
		{"comment before the usage data", ": ping\n\n" + "id: 1\n" + openAIUsageEvent + "data: [DONE]\n\n", ": ping\n\ndata: [DONE]\n\n"},
		{"empty", "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in := []byte(tc.in)
			if got := stripAll(t, in); string(got) != tc.want {
				t.Fatalf("whole:\n got %q\nwant %q", got, tc.want)
			}
			if got := stripAll(t, splitEvery(in, 1)...); string(got) != tc.want {
				t.Fatalf("1-byte pieces:\n got %q\nwant %q", got, tc.want)
			}
			if got := stripAll(t, splitEvery(in, 7)...); string(got) != tc.want {
				t.Fatalf("7-byte pieces:\n got %q\nwant %q", got, tc.want)
			}
			for i := 0; i <= len(in); i++ {
				if got := stripAll(t, in[:i], in[i:]); string(got) != tc.want {
					t.Fatalf("split at %d:\n got %q\nwant %q", i, got, tc.want)
				}
			}
		})
	}
}

// TestStripUsageEveryTwoSplits cuts a small stream with its usage chunk
// at every pair of offsets.
func TestStripUsageEveryTwoSplits(t *testing.T) {
	in := []byte("data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"}}],\"usage\":null}\r\n\r\n" +
		"data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":2}}\n\n" +
		"data: [DONE]\n\n")
	want := "data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"}}],\"usage\":null}\r\n\r\ndata: [DONE]\n\n"
	for i := 0; i <= len(in); i++ {
		for j := i; j <= len(in); j++ {
			if got := stripAll(t, in[:i], in[i:j], in[j:]); string(got) != want {
				t.Fatalf("splits at %d, %d:\n got %q\nwant %q", i, j, got, want)
			}
		}
	}
}

// TestStripUsageTimely: each event goes on as soon as it is complete.
func TestStripUsageTimely(t *testing.T) {
	var out bytes.Buffer
	s := &StripUsage{W: &out}
	events := strings.SplitAfter(openAIStreamUsage, "\n\n")
	sent := ""
	for _, ev := range events {
		if ev == "" {
			continue
		}
		s.Write([]byte(ev[:len(ev)-1]))
		if out.String() != sent {
			t.Fatalf("an incomplete event was passed on: %q", out.String())
		}
		s.Write([]byte(ev[len(ev)-1:]))
		if ev != openAIUsageEvent {
			sent += ev
		}
		if out.String() != sent {
			t.Fatalf("a complete event was held back:\n got %q\nwant %q", out.String(), sent)
		}
	}
}

type failWriter struct{ n int }

func (f *failWriter) Write(p []byte) (int, error) {
	f.n++
	return 0, errors.New("client went away")
}

func TestStripUsageWriteError(t *testing.T) {
	fw := &failWriter{}
	s := &StripUsage{W: fw}
	if _, err := s.Write([]byte(openAIStreamPlain)); err == nil {
		t.Errorf("Write: no error from a failing writer")
	}
}

func splitEvery(b []byte, n int) [][]byte {
	var out [][]byte
	for len(b) > 0 {
		k := min(n, len(b))
		out = append(out, b[:k])
		b = b[k:]
	}
	return out
}

// events splits an SSE byte stream into whole events (each ending with its
// blank line) and a trailing partial one, independently of eventEnd.
func events(b []byte) [][]byte {
	var out [][]byte
	start := 0
	for i := 0; i < len(b); i++ {
		if b[i] != '\n' {
			continue
		}
		j := i + 1
		if j < len(b) && b[j] == '\r' {
			j++
		}
		if j < len(b) && b[j] == '\n' {
			out = append(out, b[start:j+1])
			start = j + 1
			i = j
		}
	}
	if start < len(b) {
		out = append(out, b[start:])
	}
	return out
}

func FuzzStream(f *testing.F) {
	for _, s := range []string{openAIStreamUsage, openAIStreamPlain, geminiSSE, anthropicSSE, responsesSSE, "data:\n", "data: {\n\r\n", ""} {
		f.Add([]byte(s), uint8(7))
	}
	f.Fuzz(func(t *testing.T, b []byte, size uint8) {
		var whole, pieces Stream
		whole.Write(b)
		for _, p := range splitEvery(b, int(size)+1) {
			pieces.Write(p)
		}
		if whole.Usage != pieces.Usage || whole.Found != pieces.Found || whole.bytes != pieces.bytes {
			t.Fatalf("chunking changed the result: whole %+v %v %d, pieces of %d %+v %v %d",
				whole.Usage, whole.Found, whole.bytes, int(size)+1, pieces.Usage, pieces.Found, pieces.bytes)
		}
		if whole.StreamedBytes() < 0 || whole.StreamedBytes() > int64(len(b)) {
			t.Fatalf("StreamedBytes %d of %d bytes", whole.StreamedBytes(), len(b))
		}
	})
}

func FuzzAskForUsage(f *testing.F) {
	for _, s := range []string{chatRequest, chatRequestPretty, `{"stream":true,"stream_options":{}}`, `{"stream":true,"stream_options":{"x":1}}`,
		`{"stream":true,"stream_options":{"include_usage":false}}`, ` {"stream":1}`, `[{"stream":true}]`, `{"stream":"true"}`, `{}`, ``} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		in := append([]byte(nil), b...)
		out, added := AskForUsage(b)
		if !bytes.Equal(b, in) {
			t.Fatalf("input modified")
		}
		if !added {
			if !bytes.Equal(out, b) {
				t.Fatalf("not added but changed: %q -> %q", b, out)
			}
			return
		}
		ok := false
		for _, ins := range insertions {
			ok = ok || inserted(b, out, ins)
		}
		if !ok {
			t.Fatalf("output is not the input with one insertion:\n in %q\nout %q", b, out)
		}
		if gjson.ValidBytes(b) {
			if !gjson.ValidBytes(out) {
				t.Fatalf("valid input, invalid output:\n in %q\nout %q", b, out)
			}
			if v := gjson.GetBytes(out, "stream_options.include_usage"); v.Type != gjson.True {
				t.Fatalf("include_usage = %q in %q", v.Raw, out)
			}
		}
	})
}

func FuzzStripUsage(f *testing.F) {
	for _, s := range []string{openAIStreamUsage, openAIStreamPlain, geminiSSE, "data: x\n\r\n\n", "\n\n\n", "\r\n\r\n", ""} {
		f.Add([]byte(s), uint8(3))
	}
	f.Fuzz(func(t *testing.T, b []byte, size uint8) {
		whole := stripAll(t, b)
		if got := stripAll(t, splitEvery(b, int(size)+1)...); !bytes.Equal(got, whole) {
			t.Fatalf("chunking changed the output:\n whole %q\npieces %q", whole, got)
		}
		// The output is whole input events, in order, some left out; every
		// one left out is a usage-only chunk.
		rest := whole
		for _, ev := range events(b) {
			if bytes.HasPrefix(rest, ev) {
				rest = rest[len(ev):]
				continue
			}
			if !usageOnly(ev) {
				t.Fatalf("event %q left out but is not usage-only; output %q", ev, whole)
			}
		}
		if len(rest) != 0 {
			t.Fatalf("output has bytes that are not input events: %q", rest)
		}
	})
}
