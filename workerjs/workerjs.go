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
	"net/http"
	"strconv"
	"strings"
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
// isolate sees the same entries. Keys beginning with CachePrefix go to a
// second Map, a cache bounded to CacheEntries entries and CacheBytes
// bytes (as Go strings) of keys and values: the oldest written are
// dropped first (a Map iterates in insertion order). Zero bounds:
// unbounded.
type Map struct {
	Name                     string
	CachePrefix              string
	CacheEntries, CacheBytes int
}

func global(name string) js.Value {
	v := js.Global().Get(name)
	if v.IsUndefined() {
		v = js.Global().Get("Map").New()
		js.Global().Set(name, v)
	}
	return v
}

func (m Map) cached(key string) bool {
	return m.CachePrefix != "" && strings.HasPrefix(key, m.CachePrefix)
}

func (m Map) of(key string) js.Value {
	if m.cached(key) {
		return global(m.Name + "Cache")
	}
	return global(m.Name)
}

func (m Map) Get(key string) (string, bool) {
	v := m.of(key).Call("get", key)
	if v.Type() != js.TypeString {
		return "", false
	}
	return v.String(), true
}

// bytesKey is the cache Map's property holding its total size; a third
// Map holds each entry's size (the length of a JS string cannot be read
// from Go without copying it).
const bytesKey = "keypoolBytes"

func (m Map) Set(key, value string) {
	c := m.of(key)
	if !m.cached(key) {
		c.Call("set", key, value)
		return
	}
	sizes := global(m.Name + "Sizes")
	k := js.ValueOf(key)
	total := cacheBytes(c) - forget(c, sizes, k) + len(key) + len(value)
	c.Call("set", k, value)
	sizes.Call("set", k, len(key)+len(value))
	for n := c.Get("size").Int(); n > 0 && (m.CacheEntries > 0 && n > m.CacheEntries || m.CacheBytes > 0 && total > m.CacheBytes); n-- {
		total -= forget(c, sizes, c.Call("keys").Call("next").Get("value"))
	}
	c.Set(bytesKey, total)
}

func cacheBytes(c js.Value) int {
	if v := c.Get(bytesKey); v.Type() == js.TypeNumber {
		return v.Int()
	}
	return 0
}

// forget deletes a key from the cache and returns the size it held.
func forget(c, sizes, key js.Value) int {
	v := sizes.Call("get", key)
	if v.Type() != js.TypeNumber {
		return 0
	}
	c.Call("delete", key)
	sizes.Call("delete", key)
	return v.Int()
}

func (m Map) Delete(key string) {
	c := m.of(key)
	if !m.cached(key) {
		c.Call("delete", key)
		return
	}
	c.Set(bytesKey, cacheBytes(c)-forget(c, global(m.Name+"Sizes"), js.ValueOf(key)))
}

// ClearCache drops the cache's entries, keeping the others.
func (m Map) ClearCache() {
	c := global(m.Name + "Cache")
	c.Call("clear")
	global(m.Name + "Sizes").Call("clear")
	c.Set(bytesKey, 0)
}

// CacheSize reports the cache's entries and bytes (debug stats).
func (m Map) CacheSize() (entries, bytes int) {
	c := global(m.Name + "Cache")
	return c.Get("size").Int(), cacheBytes(c)
}

// InjectFault sets a fault entry/store.mjs applies to every D1 statement
// until the unix ms until: mode "down" (each fails at once) or "slow"
// (each waits delay ms first); "" lifts it. Only the KEYPOOL_DEBUG route
// /admin/api/debug/faults calls it.
func InjectFault(target, mode string, delay time.Duration, until int64) {
	faults := js.Global().Get("keypoolFaults")
	if faults.IsUndefined() {
		faults = object.New()
		js.Global().Set("keypoolFaults", faults)
	}
	if mode == "" {
		faults.Delete(target)
		return
	}
	f := object.New()
	f.Set("mode", mode)
	f.Set("delay", float64(delay.Milliseconds()))
	f.Set("until", float64(until))
	faults.Set(target, f)
}
