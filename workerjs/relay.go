//go:build js && wasm

package workerjs

import (
	"io"
	"net/http"
	"syscall/js"
	"time"

	"github.com/keypool/keypool/usage"
)

// streams is entry/streams.mjs, which the entry module exposes: upstream
// bodies are read and relayed there, so that their bytes cross into Go
// only where Go must decide something (a failed answer's head) and a
// relayed answer costs Go a constant number of calls, however many
// chunks it has.
func streams() js.Value { return js.Global().Get("keypoolStreams") }

const (
	// headBytes is what the first Read of a body asks JS for: the whole
	// head Go reads of a failed answer (handler's errorBodyLimit) in one
	// call.
	headBytes = 16 << 10
	// moreBytes is what each later Read asks for (a model list read whole).
	moreBytes = 1 << 20
)

// jsBody is a fetched response's body, left in JS. Read takes it into Go
// in large pieces (a failed answer's head: one call); Relay hands it to
// the client as a JS stream, from its first byte, whatever Go has read.
type jsBody struct {
	res    js.Value
	buf    []byte // read from JS, not yet by Go
	asked  bool   // Go has read from JS
	end    bool   // JS has given the last byte
	err    error
	handed bool // relayed: the stream is the client's now
}

func (b *jsBody) Read(p []byte) (int, error) {
	for len(b.buf) == 0 {
		switch {
		case b.err != nil:
			return 0, b.err
		case b.end:
			return 0, io.EOF
		}
		n := moreBytes
		if !b.asked {
			n = headBytes
		}
		b.asked = true
		v, err := await(streams().Call("read", b.res, n))
		if err != nil {
			b.err = err
			continue
		}
		b.buf = make([]byte, v.Length())
		js.CopyBytesToGo(b.buf, v)
		// JS gives fewer bytes than asked only at the end.
		b.end = len(b.buf) < n
	}
	n := copy(p, b.buf)
	b.buf = b.buf[n:]
	return n, nil
}

// Close discards a body nobody relayed, so the connection is released.
func (b *jsBody) Close() error {
	if !b.handed && !b.end {
		b.end = true
		streams().Call("cancel", b.res)
	}
	return nil
}

// rawBodyWriter is syumai/workers' response writer: it takes a JS stream
// as the response body.
type rawBodyWriter interface {
	WriteRawJSBody(js.Value)
}

// Relay sends the whole body to w as a JS stream, read on the way in JS
// (entry/streams.mjs): strip takes out the usage chunk keypool asked for,
// kind says what to read for usage; a body that sends nothing for idle is
// ended (0: no limit). wait must be called after the
// response has gone (the body flows only then); it returns once the body
// is over. ok is false when w cannot take a JS stream; nothing was sent.
func (b *jsBody) Relay(w http.ResponseWriter, strip bool, kind usage.Kind, idle time.Duration) (wait func() usage.Relayed, ok bool) {
	rw, ok := writerOf[rawBodyWriter](w)
	if !ok || b.handed {
		return nil, false
	}
	b.handed = true
	pair := streams().Call("relay", b.res, strip, int(kind), idle.Milliseconds())
	rw.WriteRawJSBody(pair.Index(0))
	done := pair.Index(1)
	return func() usage.Relayed {
		v, err := await(done)
		if err != nil || v.IsNull() {
			return usage.Relayed{}
		}
		sum := make([]byte, v.Length())
		js.CopyBytesToGo(sum, v)
		return usage.FromSummary(kind, sum)
	}, true
}

// writerOf finds the writer of type T under w, through the wrappers
// that Unwrap (the proxy's recorders).
func writerOf[T any](w http.ResponseWriter) (T, bool) {
	for {
		if t, ok := w.(T); ok {
			return t, true
		}
		u, ok := w.(interface{ Unwrap() http.ResponseWriter })
		if !ok {
			var zero T
			return zero, false
		}
		w = u.Unwrap()
	}
}
