package main

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tidwall/gjson"

	"github.com/keypool/keypool/e2e/fakeupstream"
)

// benchUpstream is the origin every target talks to: the fake upstream,
// plus the long streams of the stream phases, which it serves itself and
// stamps with the moment their first chunk left, so that a target's first
// byte can be set against the upstream's own.
type benchUpstream struct {
	URL  string
	fake *fakeupstream.Server
	srv  *http.Server

	mu        sync.Mutex
	firstSent map[string]time.Time // stream id → first chunk flushed
}

// slowStreamPrefix starts the model name of a long stream:
// slow-stream-<chunks>-<gap in µs>, e.g. slow-stream-200-10000 is 200
// chunks 10 ms apart. The request's "user" field is its stream id.
const slowStreamPrefix = "slow-stream-"

func slowStreamModel(chunks int, gap time.Duration) string {
	return fmt.Sprintf("%s%d-%d", slowStreamPrefix, chunks, gap.Microseconds())
}

func startBenchUpstream(fake *fakeupstream.Server) (*benchUpstream, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	u := &benchUpstream{URL: "http://" + ln.Addr().String(), fake: fake, firstSent: map[string]time.Time{}}
	u.srv = &http.Server{Handler: u, ReadHeaderTimeout: 10 * time.Second}
	go u.srv.Serve(ln)
	return u, nil
}

func (u *benchUpstream) Close() error { return u.srv.Close() }

// takeFirstSent returns (and forgets) when stream id's first chunk left.
func (u *benchUpstream) takeFirstSent(id string) (time.Time, bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	t, ok := u.firstSent[id]
	delete(u.firstSent, id)
	return t, ok
}

func (u *benchUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || !strings.HasSuffix(r.URL.Path, "/chat/completions") {
		u.fake.ServeHTTP(w, r)
		return
	}
	body, err := readSmall(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	model := gjson.GetBytes(body, "model").String()
	chunks, gap, ok := parseSlowStream(model)
	if !ok {
		r.Body = readCloser(body)
		u.fake.ServeHTTP(w, r)
		return
	}
	u.slowStream(w, r, model, gjson.GetBytes(body, "user").String(), chunks, gap,
		gjson.GetBytes(body, "stream_options.include_usage").Bool())
}

func parseSlowStream(model string) (chunks int, gap time.Duration, ok bool) {
	rest, found := strings.CutPrefix(model, slowStreamPrefix)
	if !found {
		return 0, 0, false
	}
	a, b, found := strings.Cut(rest, "-")
	n, err1 := strconv.Atoi(a)
	us, err2 := strconv.Atoi(b)
	if !found || err1 != nil || err2 != nil || n < 1 {
		return 0, 0, false
	}
	return n, time.Duration(us) * time.Microsecond, true
}

// slowStream writes chunks tiny chat-completion events gap apart, each
// flushed alone, then the usage chunk (when asked for) and [DONE].
func (u *benchUpstream) slowStream(w http.ResponseWriter, r *http.Request, model, id string, chunks int, gap time.Duration, usage bool) {
	if r.Header.Get("Authorization") == "" {
		http.Error(w, `{"error":{"message":"no key","type":"invalid_request_error","code":"invalid_api_key"}}`, http.StatusUnauthorized)
		return
	}
	f, _ := w.(http.Flusher)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	event := []byte(`data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"` + model + `","choices":[{"index":0,"delta":{"content":"x"},"finish_reason":null}]}` + "\n\n")
	for i := 0; i < chunks; i++ {
		if i == 0 && id != "" {
			u.mu.Lock()
			u.firstSent[id] = time.Now()
			u.mu.Unlock()
		}
		if _, err := w.Write(event); err != nil {
			return // the client (the target) went away
		}
		if f != nil {
			f.Flush()
		}
		if gap > 0 && i < chunks-1 {
			select {
			case <-time.After(gap):
			case <-r.Context().Done():
				return
			}
		}
	}
	fin := fakeupstream.StreamChunks(model)
	if usage {
		w.Write([]byte(fakeupstream.StreamUsageChunk(model)))
	}
	w.Write([]byte(fin[len(fin)-2] + fin[len(fin)-1]))
}

// readSmall reads a request body (the benchmark's are at most a few MB).
func readSmall(r *http.Request) ([]byte, error) {
	return io.ReadAll(io.LimitReader(r.Body, maxBodyVar+1))
}

// readCloser gives a body that was read back to the fake upstream.
func readCloser(b []byte) io.ReadCloser { return io.NopCloser(bytes.NewReader(b)) }
