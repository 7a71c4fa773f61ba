package fakeupstream

import (
	"net/http"
	"strings"
	"sync"
	"time"
)

// StreamChunks are the SSE events a streamed chat completion sends, in order.
func StreamChunks(model string) []string {
	head := `data: {"id":"chatcmpl-fake","object":"chat.completion.chunk","created":1732233000,"model":"` + model + `","choices":[{"index":0,"delta":`
	return []string{
		head + `{"role":"assistant","content":"Hel"},"finish_reason":null}]}` + "\n\n",
		head + `{"content":"lo"},"finish_reason":null}]}` + "\n\n",
		head + `{},"finish_reason":"stop"}]}` + "\n\n",
		"data: [DONE]\n\n",
	}
}

// StreamUsageChunk is the last event before "data: [DONE]" of a stream
// whose request asked for stream_options.include_usage: OpenAI's
// usage-only chunk (empty choices), with ChatCompletion's counts.
func StreamUsageChunk(model string) string {
	return `data: {"id":"chatcmpl-fake","object":"chat.completion.chunk","created":1732233000,"model":"` + model +
		`","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":7,"total_tokens":12}}` + "\n\n"
}

// StreamChunksWithUsage are the events of a streamed chat completion
// whose request asked for stream_options.include_usage: StreamChunks with
// StreamUsageChunk before "data: [DONE]".
func StreamChunksWithUsage(model string) []string {
	c := StreamChunks(model)
	return append(c[:len(c)-1:len(c)-1], StreamUsageChunk(model), c[len(c)-1])
}

func (s *Server) stream(w *capture, model string, gate chan struct{}, includeUsage bool) {
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	chunks := StreamChunks(model)
	if includeUsage {
		chunks = StreamChunksWithUsage(model)
	}
	for i, c := range chunks {
		w.Write([]byte(c))
		w.Flush()
		if i == 0 && gate != nil {
			select {
			case <-gate:
			case <-time.After(10 * time.Second):
			}
		}
	}
}

// BigStreamModel is the model name for which a chat completion, streamed
// or not, is answered with BigStreamSize bytes of SSE: BigStreamEvents
// content events of BigStreamEventSize bytes each, flushed one by one, then
// a finish event and "data: [DONE]". The benchmarks use it to time a large
// streamed answer. The bytes sent for it are not kept in Request.Sent.
const BigStreamModel = "big-stream"

// Shape of the BigStreamModel answer.
const (
	BigStreamEvents    = 1024
	BigStreamEventSize = 4096
)

var (
	bigStreamOnce   sync.Once
	bigStreamChunks [][]byte
	bigStreamSize   int
)

// BigStreamChunks returns the chunks of the BigStreamModel answer, in order
// (shared: do not modify them).
func BigStreamChunks() [][]byte {
	bigStreamOnce.Do(func() {
		head := `data: {"id":"chatcmpl-fake","object":"chat.completion.chunk","created":1732233000,"model":"` + BigStreamModel + `","choices":[{"index":0,"delta":{"content":"`
		tail := `"},"finish_reason":null}]}` + "\n\n"
		pad := BigStreamEventSize - len(head) - len(tail)
		event := []byte(head + strings.Repeat("x", pad) + tail)
		for i := 0; i < BigStreamEvents; i++ {
			bigStreamChunks = append(bigStreamChunks, event)
		}
		fin := StreamChunks(BigStreamModel)
		bigStreamChunks = append(bigStreamChunks, []byte(fin[len(fin)-2]), []byte(fin[len(fin)-1]))
		for _, c := range bigStreamChunks {
			bigStreamSize += len(c)
		}
	})
	return bigStreamChunks
}

// BigStreamSize is the exact length in bytes of the BigStreamModel answer.
func BigStreamSize() int {
	BigStreamChunks()
	return bigStreamSize
}

// bigStream writes the BigStreamModel answer around the capture, so that
// its 4 MiB are not recorded for every request.
func bigStream(w *capture) {
	w.status = http.StatusOK
	rw := w.ResponseWriter
	rw.Header().Set("Content-Type", "text/event-stream")
	rw.Header().Set("Cache-Control", "no-cache")
	rw.WriteHeader(http.StatusOK)
	f, _ := rw.(http.Flusher)
	for _, c := range BigStreamChunks() {
		if _, err := rw.Write(c); err != nil {
			return
		}
		if f != nil {
			f.Flush()
		}
	}
}
