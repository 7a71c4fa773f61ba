// Package usage reads what an upstream says a request used: tokens in,
// tokens out, from JSON answers and from SSE streams of every provider
// family, and estimates them where the upstream says nothing. It also
// makes an OpenAI-compatible chat stream report its usage when the
// client did not ask for it, and removes that extra chunk again from what
// the client sees. It does no I/O.
package usage

import (
	"bytes"
	"io"

	"github.com/tidwall/gjson"

	"github.com/keypool/keypool/jsonout"
)

// Usage is a request's token counts.
type Usage struct {
	Prompt     int64
	Completion int64
	// Cached is the part of Prompt the provider read from its prompt
	// cache (OpenAI prompt_tokens_details.cached_tokens, the Responses
	// API's input_tokens_details.cached_tokens, DeepSeek
	// prompt_cache_hit_tokens, Anthropic cache_read_input_tokens, Gemini
	// cachedContentTokenCount).
	Cached int64
	// Estimated: the upstream reported nothing; the counts are guessed
	// from the text (about 4 bytes a token).
	Estimated bool
}

// Total is prompt plus completion tokens.
func (u Usage) Total() int64 { return u.Prompt + u.Completion }

// fromObject reads usage from one JSON object in any provider's shape:
// OpenAI {"usage":{"prompt_tokens","completion_tokens"}}, the Responses API
// and Anthropic {"usage":{"input_tokens","output_tokens"}}, Gemini
// {"usageMetadata":{"promptTokenCount","candidatesTokenCount"}}, an
// Anthropic stream's {"type":"message_start","message":{"usage":…}}, and a
// Responses API stream's {"type":"response.completed","response":{"usage":…}}.
func fromObject(o gjson.Result) (Usage, bool) {
	u := o.Get("usage")
	if !u.IsObject() {
		u = o.Get("message.usage") // Anthropic message_start
	}
	if !u.IsObject() {
		u = o.Get("response.usage") // Responses API stream: response.completed
	}
	if u.IsObject() {
		p, c := u.Get("prompt_tokens"), u.Get("completion_tokens")
		var cacheSide int64
		hit := u.Get("prompt_tokens_details.cached_tokens").Int() + u.Get("prompt_cache_hit_tokens").Int()
		if !p.Exists() && !c.Exists() {
			p, c = u.Get("input_tokens"), u.Get("output_tokens")
			// Anthropic counts the prompt read from or written to its
			// cache apart from input_tokens; the prompt is all three
			// (OpenAI's prompt_tokens and Gemini's promptTokenCount
			// include cached tokens too).
			cacheSide = u.Get("cache_creation_input_tokens").Int() + u.Get("cache_read_input_tokens").Int()
			hit = u.Get("cache_read_input_tokens").Int() + u.Get("input_tokens_details.cached_tokens").Int()
		}
		if p.Exists() || c.Exists() {
			return Usage{Prompt: p.Int() + cacheSide, Completion: c.Int(), Cached: hit}, true
		}
		return Usage{}, false
	}
	if m := o.Get("usageMetadata"); m.IsObject() {
		// Thoughts are billed as output.
		return Usage{Prompt: m.Get("promptTokenCount").Int(), Cached: m.Get("cachedContentTokenCount").Int(),
			Completion: m.Get("candidatesTokenCount").Int() + m.Get("thoughtsTokenCount").Int()}, true
	}
	return Usage{}, false
}

// FromJSON reads the usage of a whole JSON answer.
func FromJSON(body []byte) (Usage, bool) {
	if !gjson.ValidBytes(body) {
		return Usage{}, false
	}
	r := gjson.ParseBytes(body)
	if r.IsArray() { // Gemini's OpenAI API may wrap answers in an array
		a := r.Array()
		if len(a) == 0 {
			return Usage{}, false
		}
		r = a[len(a)-1]
	}
	return fromObject(r)
}

// Stream follows an SSE stream's events and keeps the usage they report:
// the final usage chunk of OpenAI-compatible chat streams, Gemini's
// usageMetadata (the last one counts), Anthropic's message_start (input)
// and message_delta (output).
type Stream struct {
	Usage Usage
	Found bool
	bytes int64 // data bytes seen, for an estimate
	line  []byte
	// long: the current line outgrew maxLine and is skipped to its end;
	// longData: it is a data line, whose bytes still count (longBytes).
	long, longData bool
	longBytes      int64
}

// Write feeds the stream's bytes in any chunking.
func (s *Stream) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		part, rest, eol := p, []byte(nil), false
		if i := bytes.IndexByte(p, '\n'); i >= 0 {
			part, rest, eol = p[:i], p[i+1:], true
		}
		switch {
		case s.long:
			s.longBytes += int64(len(part))
		case len(s.line)+len(part) > maxLine:
			// A line this long carries no usage we read: it is skipped
			// whatever the chunking, and only its size is kept.
			head := s.line
			if len(head) < 5 {
				head = append(head, part[:min(len(part), 5-len(head))]...)
			}
			s.long, s.longData = true, bytes.HasPrefix(head, []byte("data:"))
			s.longBytes = int64(len(s.line)+len(part)) - 5
			s.line = s.line[:0]
		default:
			s.line = append(s.line, part...)
		}
		if !eol {
			break
		}
		if s.long {
			if s.longData {
				s.bytes += s.longBytes
			}
			s.long, s.longData, s.longBytes = false, false, 0
		} else {
			s.event(bytes.TrimRight(s.line, "\r"))
		}
		s.line = s.line[:0]
		p = rest
	}
	return n, nil
}

// maxLine bounds the part of one SSE line kept.
const maxLine = 1 << 20

func (s *Stream) event(line []byte) {
	data, ok := bytes.CutPrefix(line, []byte("data:"))
	if !ok {
		return
	}
	data = bytes.TrimSpace(data)
	if len(data) == 0 || data[0] != '{' || !gjson.ValidBytes(data) {
		s.bytes += int64(len(data))
		return
	}
	o := gjson.ParseBytes(data)
	// For an estimate, the text the stream carried, not its JSON.
	s.bytes += int64(len(o.Get("choices.0.delta.content").String()) + len(o.Get("candidates.0.content.parts.0.text").String()) +
		len(o.Get("delta.text").String()) + len(o.Get("delta").String())*boolInt(o.Get("type").String() == "response.output_text.delta"))
	if o.Get("type").String() == "message_delta" {
		// Anthropic: the output count arrives at the end; the input count
		// came with message_start.
		if c := o.Get("usage.output_tokens"); c.Exists() {
			s.Usage.Completion, s.Found = c.Int(), true
		}
		return
	}
	if u, ok := fromObject(o); ok {
		if o.Get("type").String() == "message_start" {
			s.Usage.Prompt, s.Usage.Cached = u.Prompt, u.Cached
		} else {
			s.Usage = u
		}
		s.Found = true
	}
}

// Estimate guesses the usage of a request whose upstream reported none,
// from the sizes of the request and answer texts (about 4 bytes a token,
// the usual rule of thumb for English; it is marked Estimated).
func Estimate(requestBytes, answerBytes int64) Usage {
	return Usage{Prompt: (requestBytes + 3) / 4, Completion: (answerBytes + 3) / 4, Estimated: true}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// StreamedBytes is how many bytes of text (or, for events that are not
// JSON, of data) the stream carried.
func (s *Stream) StreamedBytes() int64 { return s.bytes }

// AskForUsage makes an OpenAI-compatible streamed chat request ask for a
// final usage chunk ("stream_options":{"include_usage":true}). added is
// true when the request did not ask already: the client then does not
// expect that chunk, and StripUsage must remove it from what it sees.
// Every other byte of the body is kept.
func AskForUsage(body []byte) (out []byte, added bool) {
	if !gjson.GetBytes(body, "stream").Bool() {
		return body, false
	}
	opts := gjson.GetBytes(body, "stream_options")
	if opts.Exists() && !opts.IsObject() {
		return body, false
	}
	if inc := opts.Get("include_usage"); inc.Exists() {
		return body, false // the client decided either way
	}
	var insert []byte
	at := 0
	if opts.IsObject() {
		// The body is not validated as a whole; a truncated or broken one
		// (`"stream_options":{` at its end) is sent on as it is.
		raw := opts.Raw
		if len(raw) < 2 || raw[len(raw)-1] != '}' || opts.Index <= 0 || opts.Index+len(raw) > len(body) || body[opts.Index] != '{' {
			return body, false
		}
		at = opts.Index + 1 // just after its '{'
		insert = []byte(`"include_usage":true`)
		if len(bytes.TrimSpace([]byte(raw[1:len(raw)-1]))) > 0 {
			insert = append(insert, ',')
		}
	} else {
		trimmed := bytes.TrimLeft(body, " \t\r\n")
		if len(trimmed) == 0 || trimmed[0] != '{' {
			return body, false
		}
		at = len(body) - len(trimmed) + 1
		var b jsonout.Builder
		insert = append(b.Object().Key("stream_options").Object().Key("include_usage").Bool(true).EndObject().Bytes()[1:], ',')
		if rest := bytes.TrimSpace(trimmed[1:]); len(rest) > 0 && rest[0] == '}' {
			insert = insert[:len(insert)-1] // an empty object: no comma
		}
	}
	out = make([]byte, 0, len(body)+len(insert))
	out = append(out, body[:at]...)
	out = append(out, insert...)
	return append(out, body[at:]...), true
}

// StripUsage passes an SSE stream on to w unchanged, except the
// usage-only chunk AskForUsage asked for (an event whose data has an empty
// "choices" and a "usage"). Events are passed on whole, as soon as they
// are complete, so a client sees each one when it would have.
type StripUsage struct {
	W   io.Writer
	buf []byte
	// scanned: the bytes of buf searched for an event's end already (a
	// large event arriving in many pieces is not searched again each time).
	scanned int
}

// Write takes the stream's bytes in any chunking.
func (s *StripUsage) Write(p []byte) (int, error) {
	s.buf = append(s.buf, p...)
	for {
		end := eventEnd(s.buf, s.scanned)
		if end < 0 {
			// The last two bytes may begin a blank line ("\n", "\n\r").
			s.scanned = max(len(s.buf)-2, 0)
			return len(p), nil
		}
		ev := s.buf[:end]
		s.buf, s.scanned = s.buf[end:], 0
		if !usageOnly(ev) {
			if _, err := s.W.Write(ev); err != nil {
				return len(p), err
			}
		}
	}
}

// Close passes on whatever is left (a stream that did not end an event).
func (s *StripUsage) Close() error {
	rest := s.buf
	s.buf, s.scanned = nil, 0
	if len(rest) > 0 && !usageOnly(rest) {
		_, err := s.W.Write(rest)
		return err
	}
	return nil
}

// eventEnd is the end of the first complete event in b (after its blank
// line), or -1; from is where to start looking for it.
func eventEnd(b []byte, from int) int {
	for i := from; i < len(b); i++ {
		if b[i] != '\n' {
			continue
		}
		j := i + 1
		if j < len(b) && b[j] == '\r' {
			j++
		}
		if j < len(b) && b[j] == '\n' {
			return j + 1
		}
	}
	return -1
}

func usageOnly(ev []byte) bool {
	for _, line := range bytes.Split(ev, []byte("\n")) {
		data, ok := bytes.CutPrefix(bytes.TrimRight(line, "\r"), []byte("data:"))
		if !ok {
			continue
		}
		o := gjson.ParseBytes(bytes.TrimSpace(data))
		c := o.Get("choices")
		return o.Get("usage").IsObject() && c.IsArray() && len(c.Array()) == 0
	}
	return false
}
