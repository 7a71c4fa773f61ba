//go:build js && wasm

// Package workerjs binds keypool to the Workers JavaScript runtime where
// syumai/workers' general-purpose conversions cost too much: bodies cross
// between Go and JS in one piece instead of in 16 KB pulls (under TinyGo
// every crossing is slow), and response bodies Go only relays never enter
// Go at all.
package workerjs

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"io"
	"net/http"
	"strconv"
	"syscall/js"
	"time"

	"github.com/syumai/workers/cloudflare/d1"
)

var (
	uint8Array = js.Global().Get("Uint8Array")
	object     = js.Global().Get("Object")
	fetchFn    = js.Global().Get("fetch")
	abortCls   = js.Global().Get("AbortController")
)

// await waits for a JS promise from Go.
func await(p js.Value) (js.Value, error) {
	type result struct {
		v   js.Value
		err error
	}
	ch := make(chan result, 1)
	then := js.FuncOf(func(_ js.Value, args []js.Value) any {
		ch <- result{v: args[0]}
		return nil
	})
	catch := js.FuncOf(func(_ js.Value, args []js.Value) any {
		ch <- result{err: errors.New(args[0].Call("toString").String())}
		return nil
	})
	p.Call("then", then, catch)
	r := <-ch
	then.Release()
	catch.Release()
	return r.v, r.err
}

// bytesOf copies an ArrayBuffer into Go in one piece.
func bytesOf(buf js.Value) []byte {
	u8 := uint8Array.New(buf)
	b := make([]byte, u8.Get("byteLength").Int())
	js.CopyBytesToGo(b, u8)
	return b
}

// Fetch sends req with the runtime's fetch. The request body goes to JS as
// one Uint8Array, which also keeps its Content-Length (a stream would be
// sent chunked): the incoming body's own JS bytes when it is unchanged
// (see outboundBody). Headers cross as one string each way. The response
// body stays in JS (see jsBody).
func Fetch(req *http.Request) (*http.Response, error) {
	init := object.New()
	init.Set("method", req.Method)
	init.Set("headers", jsHeaders(req.Header))
	if req.Body != nil && req.Body != http.NoBody && req.Method != http.MethodGet && req.Method != http.MethodHead {
		body, err := outboundBody(req)
		if err != nil {
			return nil, err
		}
		init.Set("body", body)
	}
	init.Set("redirect", "manual")
	// The context's deadline bounds the wait for the response headers
	// only. The timer lives in JS and is cleared by the promise itself the
	// moment the headers arrive, however late Go gets to run again, so a
	// stream is never cut once it has begun.
	var ctrl js.Value
	deadline, hasDeadline := req.Context().Deadline()
	if hasDeadline {
		ctrl = abortCls.New()
		init.Set("signal", ctrl.Get("signal"))
	}
	// Invoke, not Call: fetch must not get the global proxy as `this`.
	p := fetchFn.Invoke(req.URL.String(), init)
	if hasDeadline {
		ms := max(time.Until(deadline).Milliseconds(), 1)
		// Invoke, not Call, for the same reason as fetch.
		id := js.Global().Get("setTimeout").Invoke(ctrl.Get("abort").Call("bind", ctrl), ms)
		clear := js.Global().Get("clearTimeout").Call("bind", js.Undefined(), id)
		p.Call("then", clear, clear)
	}
	res, err := await(p)
	if err != nil {
		if hasDeadline && ctrl.Get("signal").Get("aborted").Bool() {
			return nil, errors.New("no answer before the upstream timeout")
		}
		return nil, err
	}
	status := res.Get("status").Int()
	header := goHeaders(res.Get("headers"))
	cl, _ := strconv.ParseInt(header.Get("Content-Length"), 10, 64)
	return &http.Response{
		Status:        strconv.Itoa(status) + " " + res.Get("statusText").String(),
		StatusCode:    status,
		Header:        header,
		Body:          &jsBody{res: res},
		ContentLength: cl,
		Request:       req,
	}, nil
}

// jsHeaders is h as a JS Headers, built in one call from one string.
func jsHeaders(h http.Header) js.Value {
	return boundary().Call("headers", joinHeaders(h))
}

// goHeaders reads a JS Headers in one call, as one string; values are
// kept whole, as the runtime presents them.
func goHeaders(h js.Value) http.Header {
	return parseHeaders(boundary().Call("headerString", h).String())
}

// jsBody is a fetched response's body, left in JS until Go asks for it.
// Relayed with io.Copy to the response writer (serve.go), the JS stream
// becomes the client's response body directly; read by Go (error bodies,
// a few KB), it crosses in one piece.
type jsBody struct {
	res    js.Value
	stream js.Value // the body stream when Tee replaced it; else res.body
	buf    []byte
	loaded bool
	handed bool // the stream was handed to the response: not ours to cancel
	err    error
}

func (b *jsBody) Read(p []byte) (int, error) {
	if !b.loaded {
		b.loaded = true
		buf, err := await(b.res.Call("arrayBuffer"))
		if err != nil {
			b.err = err
		} else {
			b.buf = bytesOf(buf)
		}
	}
	if len(b.buf) == 0 {
		if b.err != nil {
			return 0, b.err
		}
		return 0, io.EOF
	}
	n := copy(p, b.buf)
	b.buf = b.buf[n:]
	return n, nil
}

func (b *jsBody) body() js.Value {
	if b.stream.Truthy() {
		return b.stream
	}
	return b.res.Get("body")
}

// WriteTo hands the JS stream to a writer that can take it whole.
func (b *jsBody) WriteTo(w io.Writer) (int64, error) {
	if rw, ok := w.(interface{ WriteRawJSBody(js.Value) }); ok && !b.loaded {
		b.handed = true
		rw.WriteRawJSBody(b.body())
		return 0, nil
	}
	return io.Copy(w, struct{ io.Reader }{b})
}

// Tee splits the body stream in two (ReadableStream.tee): the body goes
// on as before, handed whole to the response, and the returned reader
// reads a copy chunk by chunk, e.g. after the response has gone, to find
// the usage a stream reports at its end. nil when the body is already
// read or has no stream.
func (b *jsBody) Tee() io.ReadCloser {
	s := b.body()
	if b.loaded || !s.Truthy() {
		return nil
	}
	pair := s.Call("tee")
	b.stream = pair.Index(0)
	return &streamReader{reader: pair.Index(1).Call("getReader")}
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

// Close discards a body nobody read, so the connection is released.
func (b *jsBody) Close() error {
	if b.handed || b.loaded {
		return nil
	}
	b.loaded = true
	if s := b.body(); s.Truthy() {
		s.Call("cancel")
	}
	return nil
}

// Counter is a number kept in a JS global, so that every Go instance of
// the isolate adds to one total.
type Counter string

func (c Counter) Load() int64 {
	v := js.Global().Get(string(c))
	if v.Type() != js.TypeNumber {
		return 0
	}
	return int64(v.Float())
}

func (c Counter) Add(delta int64) int64 {
	n := c.Load() + delta
	js.Global().Set(string(c), float64(n))
	return n
}

// D1 returns a database for the D1 binding named binding, for the life of a
// Go instance that serves many events. Connections are not kept idle, so
// each query looks the binding up in the env of the event being served.
func D1(binding string) *sql.DB {
	db := sql.OpenDB(d1Connector(binding))
	db.SetMaxIdleConns(0)
	return db
}

type d1Connector string

func (c d1Connector) Connect(ctx context.Context) (driver.Conn, error) {
	conn, err := d1.OpenConnector(string(c))
	if err != nil {
		return nil, err
	}
	return conn.Connect(ctx)
}

func (d1Connector) Driver() driver.Driver { return &d1.Driver{} }

// Map is a JS Map kept in a global, so that every Go instance of the
// isolate sees the same entries.
type Map string

func (m Map) get() js.Value {
	v := js.Global().Get(string(m))
	if v.IsUndefined() {
		v = js.Global().Get("Map").New()
		js.Global().Set(string(m), v)
	}
	return v
}

func (m Map) Get(key string) (string, bool) {
	v := m.get().Call("get", key)
	if v.Type() != js.TypeString {
		return "", false
	}
	return v.String(), true
}

func (m Map) Set(key, value string) { m.get().Call("set", key, value) }
func (m Map) Delete(key string)     { m.get().Call("delete", key) }
func (m Map) Clear()                { m.get().Call("clear") }
