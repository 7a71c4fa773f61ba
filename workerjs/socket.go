//go:build js && wasm

package workerjs

import (
	"net/http"
	"syscall/js"
	"time"
)

// sockets is entry/sockets.mjs, which relays a WebSocket session message
// by message in JS.
func sockets() js.Value { return js.Global().Get("keypoolSockets") }

// socketWriter is this package's response writer: it answers a
// handshake with the socket the client gets.
type socketWriter interface {
	writeSocket(js.Value)
}

// RelaySocket answers the client's handshake with a WebSocket relayed to
// the upstream's, which this fetched 101 answer carries (see
// proxy.socketRelayer). Go is called once per response.create when allow
// is set (a synchronous callback, so allow must not block) and once per
// finished response (next), whatever the number of messages.
func (b *jsBody) RelaySocket(w http.ResponseWriter, allow func(model string) string, idle time.Duration) (next func() ([]byte, bool), ok bool) {
	sw, ok := writerOf[socketWriter](w)
	if !ok || b.handed {
		return nil, false
	}
	check := js.Null()
	var fn js.Func
	if allow != nil {
		fn = js.FuncOf(func(_ js.Value, args []js.Value) any { return allow(args[0].String()) })
		check = fn.Value
	}
	pair := sockets().Call("relay", b.res, check, idle.Milliseconds())
	if pair.IsNull() {
		if allow != nil {
			fn.Release()
		}
		return nil, false
	}
	b.handed = true
	sw.writeSocket(pair.Index(0))
	more := pair.Index(1)
	return func() ([]byte, bool) {
		v, err := await(more.Invoke())
		if err != nil || v.IsNull() {
			if allow != nil {
				fn.Release()
				allow = nil
			}
			return nil, false
		}
		return []byte(v.String()), true
	}, true
}

// writeSocket answers 101 with ws, the client's end of the relay.
func (w *responseWriter) writeSocket(ws js.Value) {
	if w.sent {
		return
	}
	w.status = http.StatusSwitchingProtocols
	w.answer(ws)
}
