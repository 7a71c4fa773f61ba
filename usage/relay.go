package usage

import (
	"bytes"
	"strconv"
)

// Kind is how an answer body is read for its usage while it is relayed.
type Kind int

// The kinds; their numbers are shared with the JS side (entry/streams.mjs).
const (
	KindOther Kind = iota // only its size is counted
	KindSSE               // an SSE stream: usage.Stream
	KindJSON              // a JSON answer: FromJSON
	KindNone              // not read at all (a failed answer relayed)
)

// Relayed is what an answer said about its usage once it had been
// relayed to the client.
type Relayed struct {
	Usage Usage
	Found bool
	// Bytes is the answer's size for an estimate: a stream's text
	// (Stream.StreamedBytes), else the body's size.
	Bytes int64
	// Complete: the body reached its end (false: the client hung up or the
	// upstream failed mid-way; the usage is what was seen until then).
	Complete bool
	// Broke says why the upstream's body ended early, when it did: "cut"
	// (it failed mid-way) or "stalled" (it sent nothing for the stream
	// idle limit); "" otherwise (complete, or the client left).
	Broke string
}

// FromSummary reads the one buffer the JS relay (entry/streams.mjs)
// hands Go after an answer: the line "<bytes> <end> <text>\n" (end: 1
// complete, 0 the client left, cut or stalled), then
// for an SSE stream the data lines that carry usage (read with Stream),
// for a JSON answer an object holding its usage fields (read with
// FromJSON).
func FromSummary(kind Kind, b []byte) Relayed {
	line, payload, _ := bytes.Cut(b, []byte("\n"))
	f := bytes.Fields(line)
	if len(f) != 3 {
		return Relayed{}
	}
	total, _ := strconv.ParseInt(string(f[0]), 10, 64)
	text, _ := strconv.ParseInt(string(f[2]), 10, 64)
	r := Relayed{Bytes: total, Complete: string(f[1]) == "1"}
	if end := string(f[1]); end == "cut" || end == "stalled" {
		r.Broke = end
	}
	switch kind {
	case KindSSE:
		st := &Stream{}
		st.Write(payload)
		r.Usage, r.Found, r.Bytes = st.Usage, st.Found, text
	case KindJSON:
		if len(payload) > 0 {
			r.Usage, r.Found = FromJSON(payload)
		}
	}
	return r
}
