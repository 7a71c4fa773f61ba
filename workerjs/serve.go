//go:build js && wasm

package workerjs

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"syscall/js"
)

// The request boundary. syumai/workers' conversion costs tens of JS calls
// per request (an entries() array, two calls per header, a Headers object
// and an append per value on the way out) and splits every header value at
// its commas. Here the entry (entry/worker.mjs) makes one call into Go per
// request, serve(head, body, respond), and Go answers with one call,
// respond(status, headers, body):
//   - head is "method\0url\0name\0value\0…": every header once, as the
//     runtime presents it (a repeated header is one value joined with ", ");
//     header names and values cannot contain NUL, so it needs no escaping;
//   - body is the request's ReadableStream (or null), which Go reads only
//     through ReadBody, in one piece, or as a stream when a handler reads
//     r.Body;
//   - respond's headers are the same "name\0value\0…" form, and its body is
//     null, one Uint8Array, a JS stream handed on (an upstream body), or
//     true: Go pushes the chunks (see responseWriter.stream).
// net/http types stay on the Go side: the handler gets an *http.Request
// and a ResponseWriter of this package.

// boundary holds the entry's helpers (readBody, headers, …); the object
// is the same for the life of the instance.
func boundary() js.Value {
	if boundaryObj.IsUndefined() {
		boundaryObj = js.Global().Get("context").Get("boundary")
	}
	return boundaryObj
}

var boundaryObj js.Value

// Serve makes h the handler of the entry's requests.
func Serve(h http.Handler) {
	js.Global().Get("context").Get("binding").Set("serve", js.FuncOf(func(_ js.Value, args []js.Value) any {
		head, body, respond := args[0].String(), args[1], args[2]
		go serveRequest(h, head, body, respond)
		return nil
	}))
}

func serveRequest(h http.Handler, head string, body, respond js.Value) {
	w := &responseWriter{header: http.Header{}, respond: respond}
	defer w.finish()
	r, err := newRequest(head, body)
	if err != nil {
		w.WriteHeader(http.StatusBadRequest)
		w.Write([]byte("keypool could not read the request: " + err.Error()))
		return
	}
	w.head = r.Method == http.MethodHead
	h.ServeHTTP(w, r)
}

// newRequest builds the handler's request from the entry's head string.
func newRequest(head string, body js.Value) (*http.Request, error) {
	method, rest, _ := strings.Cut(head, "\x00")
	rawURL, rest, _ := strings.Cut(rest, "\x00")
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, err
	}
	header := parseHeaders(rest)
	rb := &requestBody{stream: body}
	ctx := context.WithValue(context.Background(), inboundKey{}, rb)
	r := &http.Request{
		Method: method, URL: u, Header: header, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Host: header.Get("Host"), RemoteAddr: header.Get("Cf-Connecting-Ip"),
	}
	if r.Host == "" {
		r.Host = u.Host
	}
	// A body-less request has a nil Body, as syumai/workers gave it: the
	// handler tells "no body" from "empty body" that way.
	if body.Truthy() {
		r.Body = rb
		r.ContentLength = -1
		if n, err := strconv.ParseInt(header.Get("Content-Length"), 10, 64); err == nil && n >= 0 {
			r.ContentLength = n
		}
	}
	return r.WithContext(ctx), nil
}

// parseHeaders reads "name\0value\0…" into canonical keys. Values are
// taken whole: a comma in a value is part of it.
func parseHeaders(s string) http.Header {
	h := make(http.Header, strings.Count(s, "\x00")/2)
	for s != "" {
		var name, value string
		name, s, _ = strings.Cut(s, "\x00")
		value, s, _ = strings.Cut(s, "\x00")
		key := http.CanonicalHeaderKey(name)
		h[key] = append(h[key], value)
	}
	return h
}

// joinHeaders writes h as "name\0value\0…", one pair per value.
func joinHeaders(h http.Header) string {
	n := 0
	for name, vs := range h {
		for _, v := range vs {
			n += len(name) + len(v) + 2
		}
	}
	var b strings.Builder
	b.Grow(n)
	for name, vs := range h {
		for _, v := range vs {
			b.WriteString(name)
			b.WriteByte(0)
			b.WriteString(v)
			b.WriteByte(0)
		}
	}
	return b.String()
}

// inboundKey finds the request's body from the context of the requests
// the handler makes for it, so that Fetch can send the bytes JS already
// holds instead of copying Go's copy back.
type inboundKey struct{}

// requestBody is an incoming body left in JS.
type requestBody struct {
	stream js.Value // ReadableStream
	reader *streamReader
	// What ReadBody read: Go's copy and the JS bytes it came from, the same
	// bytes, which Fetch sends on every attempt.
	goBytes []byte
	jsBytes js.Value
	// The last outbound body that was not goBytes (a rewritten model) and
	// its JS copy, made once for every attempt.
	sentGo []byte
	sentJS js.Value
	used   bool
}

// Read reads the stream chunk by chunk, for handlers that read r.Body.
func (b *requestBody) Read(p []byte) (int, error) {
	if b.reader == nil {
		if b.used {
			return 0, io.EOF
		}
		b.used = true
		b.reader = &streamReader{reader: b.stream.Call("getReader")}
	}
	return b.reader.Read(p)
}

func (b *requestBody) Close() error {
	if b.reader != nil {
		return b.reader.Close()
	}
	return nil
}

// ReadBody reads an incoming request's body in one piece, at most limit
// bytes; ok is false when it is larger. The entry reads it with a running
// count and cancels the stream past the limit, so a chunked body without
// Content-Length never puts more than limit bytes in memory. Bodies that
// are not the entry's are read the ordinary way.
func ReadBody(r *http.Request, limit int64) (body []byte, ok bool, err error) {
	if r.ContentLength > limit {
		return nil, false, nil
	}
	if r.Body == nil {
		return nil, true, nil
	}
	rb, isJS := r.Body.(*requestBody)
	if !isJS {
		body, err = io.ReadAll(io.LimitReader(r.Body, limit+1))
		return body, int64(len(body)) <= limit, err
	}
	if rb.used {
		return nil, false, errors.New("the request body was read already")
	}
	rb.used = true
	u8, err := await(boundary().Call("readBody", rb.stream, float64(limit), float64(r.ContentLength)))
	if err != nil {
		return nil, false, err
	}
	if u8.IsNull() {
		return nil, false, nil
	}
	rb.goBytes = make([]byte, u8.Get("byteLength").Int())
	js.CopyBytesToGo(rb.goBytes, u8)
	rb.jsBytes = u8
	return rb.goBytes, true, nil
}

// outboundBody is the JS value Fetch sends for req's body: the incoming
// body's JS bytes when req carries exactly the bytes ReadBody returned
// (the usual case, on every attempt), else one JS copy of Go's bytes,
// kept for the next attempt.
func outboundBody(req *http.Request) (js.Value, error) {
	var b []byte
	if wt, ok := req.Body.(io.WriterTo); ok {
		// bytes.Reader (http.NewRequest's body) hands its slice over whole.
		var s sliceOf
		if _, err := wt.WriteTo(&s); err != nil {
			return js.Value{}, err
		}
		b = s.b
	} else {
		var err error
		if b, err = io.ReadAll(req.Body); err != nil {
			return js.Value{}, err
		}
	}
	rb, _ := req.Context().Value(inboundKey{}).(*requestBody)
	switch {
	case rb != nil && sameSlice(b, rb.goBytes):
		return rb.jsBytes, nil
	case rb != nil && sameSlice(b, rb.sentGo):
		return rb.sentJS, nil
	}
	u8 := uint8Array.New(len(b))
	js.CopyBytesToJS(u8, b)
	if rb != nil && len(b) > 0 {
		rb.sentGo, rb.sentJS = b, u8
	}
	return u8, nil
}

// sliceOf keeps the slice it is handed, for the duration of one Fetch.
type sliceOf struct{ b []byte }

func (s *sliceOf) Write(p []byte) (int, error) {
	if s.b == nil {
		s.b = p
	} else {
		s.b = append(s.b[:len(s.b):len(s.b)], p...)
	}
	return len(p), nil
}

// sameSlice: a and b are the same bytes in memory, not just equal ones.
func sameSlice(a, b []byte) bool {
	return len(a) > 0 && len(a) == len(b) && &a[0] == &b[0]
}

// streamAfter is how much a response may buffer in Go before it is sent
// on as a stream; an answer the handler writes in pieces (a relayed error
// body) rarely reaches it.
const streamAfter = 1 << 20

// responseWriter collects the handler's answer and hands it to the entry
// in one respond call: when the handler returns (a buffered body), when it
// hands a JS stream on (WriteRawJSBody), or when it starts a stream (an
// event stream, Flush, or more than streamAfter bytes), after which each
// Write is pushed to JS as it comes.
type responseWriter struct {
	header  http.Header
	status  int
	respond js.Value
	head    bool // a HEAD request: the entry sends no body either
	buf     []byte
	sent    bool     // respond was called
	push    js.Value // the entry's writer, once streaming
	failed  bool     // the client is gone
}

func (w *responseWriter) Header() http.Header { return w.header }

func (w *responseWriter) WriteHeader(status int) {
	if w.status == 0 && !w.sent {
		w.status = status
	}
}

func (w *responseWriter) Write(p []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	if w.head || w.status == http.StatusNoContent || w.status == http.StatusNotModified {
		return len(p), nil
	}
	if w.failed {
		return 0, errClientGone
	}
	if !w.push.Truthy() {
		if w.sent {
			return 0, errors.New("the response body was handed on already")
		}
		w.buf = append(w.buf, p...)
		if len(w.buf) > streamAfter || strings.HasPrefix(w.header.Get("Content-Type"), "text/event-stream") {
			w.startStream()
		}
		return len(p), nil
	}
	w.pushBytes(p)
	if w.failed {
		return 0, errClientGone
	}
	return len(p), nil
}

var errClientGone = errors.New("the client closed the response")

// Flush sends what is buffered and streams from here on.
func (w *responseWriter) Flush() {
	w.WriteHeader(http.StatusOK)
	if !w.sent && !w.head {
		w.startStream()
	}
}

// WriteRawJSBody hands a JS stream on as the response body; Go never
// reads it.
func (w *responseWriter) WriteRawJSBody(body js.Value) {
	if w.sent {
		return
	}
	w.WriteHeader(http.StatusOK)
	w.answer(body)
}

func (w *responseWriter) startStream() {
	w.push = w.answer(js.ValueOf(true))
	if len(w.buf) > 0 {
		w.pushBytes(w.buf)
		w.buf = nil
	}
}

func (w *responseWriter) pushBytes(p []byte) {
	u8 := uint8Array.New(len(p))
	js.CopyBytesToJS(u8, p)
	if !w.push.Call("write", u8).Bool() {
		w.failed = true
	}
}

// answer makes the one respond call.
func (w *responseWriter) answer(body js.Value) js.Value {
	w.sent = true
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.respond.Invoke(w.status, joinHeaders(w.header), body)
}

// finish answers when the handler returns without having done so, and
// ends a pushed stream.
func (w *responseWriter) finish() {
	switch {
	case w.push.Truthy():
		w.push.Call("close")
	case !w.sent && len(w.buf) > 0:
		u8 := uint8Array.New(len(w.buf))
		js.CopyBytesToJS(u8, w.buf)
		w.buf = nil
		w.answer(u8)
	case !w.sent:
		w.answer(js.Null())
	}
}

// Memory is the number of live Go instances of the isolate, the bytes of
// wasm memory they hold together, and the most one instance has held, as
// the entry counts them.
func Memory() (instances int, bytes, peak int64) {
	m := boundary().Call("memory")
	return m.Index(0).Int(), int64(m.Index(1).Float()), int64(m.Index(2).Float())
}

// streamReader reads a JS ReadableStream chunk by chunk.
type streamReader struct {
	reader js.Value
	buf    []byte
	done   bool
}

func (r *streamReader) Read(p []byte) (int, error) {
	for len(r.buf) == 0 {
		if r.done {
			return 0, io.EOF
		}
		res, err := await(r.reader.Call("read"))
		if err != nil {
			r.done = true
			return 0, err
		}
		if res.Get("done").Bool() {
			r.done = true
			continue
		}
		v := res.Get("value")
		r.buf = make([]byte, v.Get("byteLength").Int())
		js.CopyBytesToGo(r.buf, v)
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	return n, nil
}

// Close stops reading; the other branch goes on.
func (r *streamReader) Close() error {
	if !r.done {
		r.done = true
		r.reader.Call("cancel")
	}
	return nil
}
