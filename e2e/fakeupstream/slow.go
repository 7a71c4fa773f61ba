package fakeupstream

import (
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/tidwall/gjson"
)

// SlowHeader asks for a slow stream: "<events>x<ms>" (e.g. "24x50") sends
// a streamed answer of the route's provider with <events> content events,
// every event (content or not) flushed on its own <ms> milliseconds after
// the one before, so that a test can tell a relayed stream from a buffered
// one and hang up in the middle. Routes: …/chat/completions, …/completions,
// …/responses (with "stream":true), Gemini's :streamGenerateContent and
// Anthropic's …/messages (with "stream":true). The Request records when
// the stream began and ended and whether the client was gone before it
// ended.
const SlowHeader = "X-Fake-Slow"

// CutHeader, with a slow stream, ends it after that many events by closing
// the connection: no terminating event, no end of the chunked body (an
// upstream that fails mid-way).
const CutHeader = "X-Fake-Cut"

// StallHeader, with a slow stream, pauses it after an event:
// "<event>x<ms>" (e.g. "3x4000": silence for 4 s after the third event),
// then goes on (a model thinking, or an upstream that hung).
const StallHeader = "X-Fake-Stall"

// SlowSpec is a SlowHeader value.
func SlowSpec(events int, gap time.Duration) string {
	return strconv.Itoa(events) + "x" + strconv.FormatInt(gap.Milliseconds(), 10)
}

// slowStream serves a slow stream when the request asks for one on a
// stream route; false when it does not.
func (s *Server) slowStream(w *capture, r *http.Request, rec *Request, body []byte) bool {
	n, gap, ok := parseSlow(r.Header.Get(SlowHeader))
	if !ok {
		// A client's own stream (an SDK, a CLI) on a route whose plain
		// answer is JSON: the same events, at once. (Chat completions
		// have their own stream.)
		p := r.URL.Path
		if !strings.Contains(p, ":streamGenerateContent") && !(gjson.GetBytes(body, "stream").Bool() &&
			(strings.HasSuffix(p, "/responses") || strings.HasSuffix(p, "/messages"))) {
			return false
		}
		n, gap = 4, 0
	}
	events := SlowEvents(r.URL.Path, rec.Model, n, gjson.GetBytes(body, "stream").Bool(),
		gjson.GetBytes(body, "stream_options.include_usage").Bool())
	if events == nil {
		return false
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w.ResponseWriter)
	cut, _ := strconv.Atoi(r.Header.Get(CutHeader))
	stallAfter, stall, _ := parseSlow(r.Header.Get(StallHeader))
	rec.Began = time.Now()
	defer func() { rec.Ended = time.Now() }()
	for i, ev := range events {
		if cut > 0 && i == cut {
			if conn, _, err := rc.Hijack(); err == nil {
				conn.Close()
			}
			return true
		}
		if i > 0 {
			wait := gap
			if stallAfter > 0 && i == stallAfter {
				wait = stall
			}
			select {
			case <-time.After(wait):
			case <-r.Context().Done():
				rec.Gone = true
				return true
			}
		}
		if _, err := w.Write([]byte(ev)); err != nil {
			rec.Gone = true
			return true
		}
		if err := rc.Flush(); err != nil {
			rec.Gone = true
			return true
		}
	}
	return true
}

func parseSlow(v string) (events int, gap time.Duration, ok bool) {
	a, b, found := strings.Cut(v, "x")
	n, err1 := strconv.Atoi(a)
	ms, err2 := strconv.Atoi(b)
	if !found || err1 != nil || err2 != nil || n < 1 || ms < 0 {
		return 0, 0, false
	}
	return n, time.Duration(ms) * time.Millisecond, true
}

// SlowEvents are the events of a slow stream on path, each flushed on its
// own: n content events ("w1 ", "w2 ", …) framed the way the route's
// provider frames them; nil for a request that is not a stream. An OpenAI
// chat stream asked for its usage ends with StreamUsageChunk before
// "data: [DONE]". The usage reported: chat, completions and responses
// 5 prompt and 7 completion tokens, Gemini 5 and 7, Anthropic 3 and 6.
func SlowEvents(path, model string, n int, stream, includeUsage bool) []string {
	switch {
	case strings.Contains(path, ":streamGenerateContent"):
		return geminiSlow(model, n)
	case !stream:
		return nil
	case strings.HasSuffix(path, "/chat/completions"):
		return chatSlow(model, n, includeUsage)
	case strings.HasSuffix(path, "/completions"):
		return completionsSlow(model, n)
	case strings.HasSuffix(path, "/responses"):
		return responsesSlow(model, n)
	case strings.HasSuffix(path, "/messages"):
		return anthropicSlow(model, n)
	}
	return nil
}

func word(i int) string { return "w" + strconv.Itoa(i+1) + " " }

func chatSlow(model string, n int, includeUsage bool) []string {
	head := `data: {"id":"chatcmpl-slow","object":"chat.completion.chunk","created":1732233000,"model":"` + model + `","choices":[{"index":0,"delta":`
	var out []string
	for i := 0; i < n; i++ {
		role := ""
		if i == 0 {
			role = `"role":"assistant",`
		}
		out = append(out, head+`{`+role+`"content":"`+word(i)+`"},"finish_reason":null}]}`+"\n\n")
	}
	out = append(out, head+`{},"finish_reason":"stop"}]}`+"\n\n")
	if includeUsage {
		out = append(out, StreamUsageChunk(model))
	}
	return append(out, "data: [DONE]\n\n")
}

func completionsSlow(model string, n int) []string {
	head := `data: {"id":"cmpl-slow","object":"text_completion","created":1732233000,"model":"` + model + `","choices":[{"text":"`
	var out []string
	for i := 0; i < n; i++ {
		out = append(out, head+word(i)+`","index":0,"logprobs":null,"finish_reason":null}]}`+"\n\n")
	}
	out = append(out, head+`","index":0,"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":7,"total_tokens":12}}`+"\n\n")
	return append(out, "data: [DONE]\n\n")
}

func responsesSlow(model string, n int) []string {
	ev := func(typ, data string) string { return "event: " + typ + "\ndata: " + data + "\n\n" }
	seq := 0
	next := func() string { seq++; return strconv.Itoa(seq) }
	resp := `{"id":"resp_slow","object":"response","created_at":1732233000,"status":"in_progress","model":"` + model + `","output":[]}`
	out := []string{ev("response.created", `{"type":"response.created","sequence_number":0,"response":`+resp+`}`),
		// As OpenAI's streams do, the message item is announced, then its
		// text in deltas, then the item whole (Codex reads that one).
		ev("response.output_item.added", `{"type":"response.output_item.added","sequence_number":`+next()+
			`,"output_index":0,"item":{"type":"message","id":"msg_slow","status":"in_progress","role":"assistant","content":[]}}`)}
	text := ""
	for i := 0; i < n; i++ {
		text += word(i)
		out = append(out, ev("response.output_text.delta", `{"type":"response.output_text.delta","sequence_number":`+next()+
			`,"item_id":"msg_slow","output_index":0,"content_index":0,"delta":"`+word(i)+`"}`))
	}
	item := `{"type":"message","id":"msg_slow","status":"completed","role":"assistant","content":[{"type":"output_text","text":"` + text +
		`","annotations":[]}]}`
	out = append(out, ev("response.output_item.done", `{"type":"response.output_item.done","sequence_number":`+next()+
		`,"output_index":0,"item":`+item+`}`))
	done := `{"id":"resp_slow","object":"response","created_at":1732233000,"status":"completed","model":"` + model +
		`","output":[` + item + `],"usage":{"input_tokens":5,"output_tokens":7,"total_tokens":12}}`
	return append(out, ev("response.completed", `{"type":"response.completed","sequence_number":`+next()+`,"response":`+done+`}`))
}

func geminiSlow(model string, n int) []string {
	var out []string
	for i := 0; i < n; i++ {
		finish, count := "", i+1
		if i == n-1 {
			finish, count = `,"finishReason":"STOP"`, 7
		}
		out = append(out, `data: {"candidates":[{"content":{"parts":[{"text":"`+word(i)+`"}],"role":"model"}`+finish+
			`,"index":0}],"usageMetadata":{"promptTokenCount":5,"candidatesTokenCount":`+strconv.Itoa(count)+
			`,"totalTokenCount":`+strconv.Itoa(5+count)+`},"modelVersion":"`+model+`"}`+"\r\n\r\n")
	}
	return out
}

func anthropicSlow(model string, n int) []string {
	ev := func(typ, data string) string { return "event: " + typ + "\ndata: " + data + "\n\n" }
	out := []string{
		ev("message_start", `{"type":"message_start","message":{"id":"msg_slow","type":"message","role":"assistant","model":"`+model+
			`","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":3,"output_tokens":1}}}`),
		ev("content_block_start", `{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}`),
	}
	for i := 0; i < n; i++ {
		out = append(out, ev("content_block_delta", `{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"`+word(i)+`"}}`))
	}
	return append(out,
		ev("content_block_stop", `{"type":"content_block_stop","index":0}`),
		ev("message_delta", `{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":6}}`),
		ev("message_stop", `{"type":"message_stop"}`))
}

// LargeHeader asks for a large JSON chat answer sent slowly:
// "<pieces>x<ms>" sends <pieces> pieces of 16 KiB of content, each flushed
// <ms> after the one before, and records when it began and ended and
// whether the client was gone first, as a slow stream does.
const LargeHeader = "X-Fake-Large"

func (s *Server) largeAnswer(w *capture, r *http.Request, rec *Request) bool {
	n, gap, ok := parseSlow(r.Header.Get(LargeHeader))
	if !ok {
		return false
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w.ResponseWriter)
	rec.Began = time.Now()
	defer func() { rec.Ended = time.Now() }()
	piece := strings.Repeat("x", 16<<10)
	parts := []string{`{"id":"chatcmpl-large","object":"chat.completion","model":"` + rec.Model +
		`","choices":[{"index":0,"message":{"role":"assistant","content":"`}
	for i := 0; i < n; i++ {
		parts = append(parts, piece)
	}
	parts = append(parts, `"},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":7,"total_tokens":12}}`)
	for i, p := range parts {
		if i > 0 {
			select {
			case <-time.After(gap):
			case <-r.Context().Done():
				rec.Gone = true
				return true
			}
		}
		if _, err := w.Write([]byte(p)); err != nil || rc.Flush() != nil {
			rec.Gone = true
			return true
		}
	}
	return true
}
