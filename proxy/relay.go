package proxy

import (
	"io"
	"log"
	"net/http"
	"time"

	"github.com/keypool/keypool/usage"
)

// relayer is an upstream answer body the runtime relays to the client
// itself, reading what Go needs on the way (workerjs: the JS stream,
// scanned in JS), so that its bytes never pass through Go. Bodies that
// are not relayers (in-process tests, other runtimes) are relayed by
// copyRelay, which does the same job in Go.
type relayer interface {
	// Relay sends the whole body to w, from its first byte (including
	// what Go has read of it); strip takes out the usage chunk keypool
	// asked for, kind says how to read it for usage. wait blocks until
	// the body is over and returns what it said; call it after the
	// response has gone (Deps.Defer), as the body flows only then. ok is
	// false when w cannot take the body; nothing was sent. A body that
	// sends nothing for idle (0: no limit) is ended.
	Relay(w http.ResponseWriter, strip bool, kind usage.Kind, idle time.Duration) (wait func() usage.Relayed, ok bool)
}

// copyRelay relays body to w through Go and reads it on the way, as a
// relayer does.
func copyRelay(w io.Writer, body io.Reader, strip bool, kind usage.Kind) usage.Relayed {
	switch kind {
	case usage.KindSSE:
		st := &usage.Stream{}
		dst := w
		var out *usage.StripUsage
		if strip {
			out = &usage.StripUsage{W: w}
			dst = out
		}
		_, err := io.Copy(dst, io.TeeReader(body, st))
		if err != nil {
			log.Printf("keypool: relaying upstream stream: %v", err)
		}
		if out != nil {
			out.Close()
		}
		return usage.Relayed{Usage: st.Usage, Found: st.Found, Bytes: st.StreamedBytes(), Complete: err == nil}
	case usage.KindJSON:
		b, err := io.ReadAll(io.LimitReader(body, maxUsageBody))
		w.Write(b)
		n := int64(len(b))
		if err == nil && n == maxUsageBody {
			m, err := io.Copy(w, body) // a very large answer: passed on, usage not read
			return usage.Relayed{Bytes: n + m, Complete: err == nil}
		}
		u, ok := usage.FromJSON(b)
		return usage.Relayed{Usage: u, Found: ok, Bytes: n, Complete: err == nil}
	}
	n, err := io.Copy(w, body)
	if err != nil {
		log.Printf("keypool: relaying upstream body: %v", err)
	}
	return usage.Relayed{Bytes: n, Complete: err == nil}
}

// maxUsageBody bounds the JSON answer read whole to find its usage.
const maxUsageBody = 16 << 20
