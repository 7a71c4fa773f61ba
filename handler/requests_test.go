package handler

import (
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tidwall/gjson"

	"github.com/keypool/keypool/e2e/fakeupstream"
	"github.com/keypool/keypool/proxy"
)

// TestRequestLog: a request retried on another key is kept with both
// attempts, found by the id its answer carried, and by the key filter on
// either key; a plain success is kept only when sampled; the status
// filter and paging work; a bad filter names itself; an unknown id is 404.
func TestRequestLog(t *testing.T) {
	e := newEnv(t, "USAGE_FLUSH_SECONDS", "0")
	ids := e.addKeys("openai", "sk-logged-key-00001", "sk-logged-key-00002")
	e.putSettings(`{"request_log_sample":0}`)
	e.up.SetRule("sk-logged-key-00001", fakeupstream.OpenAIRateLimited("gpt-4o-mini", 30))
	retried := e.chat("gpt-4o-mini")
	wantServed(t, retried, "2")
	rid := retried.Header().Get(proxy.RequestIDHeader)
	plain := e.chat("gpt-4o-mini") // key 1 is cooling: one attempt, a success
	if plain.Code != http.StatusOK || plain.Header().Get(proxy.RequestIDHeader) == "" || plain.Header().Get(proxy.RequestIDHeader) == rid {
		t.Fatalf("plain request: %d, id %q (the retried one's %q)", plain.Code, plain.Header().Get(proxy.RequestIDHeader), rid)
	}

	w := e.admin(http.MethodGet, "/admin/api/requests/"+rid, "")
	got := gjson.Parse(w.Body.String())
	if w.Code != http.StatusOK || got.Get("id").String() != rid || got.Get("status").Int() != 200 || got.Get("class").String() != "success" ||
		got.Get("route").String() != "/v1/chat/completions" || got.Get("model").String() != "gpt-4o-mini" || got.Get("key").Int() != ids[1] ||
		got.Get("attempts.#").Int() != 2 || got.Get("attempts.0.status").Int() != 429 || got.Get("attempts.0.verdict").String() != "cool" ||
		got.Get("attempts.0.key_masked").String() != "sk-lo…0001" || got.Get("attempts.1.status").Int() != 200 {
		t.Fatalf("the retried request's entry: %d %s", w.Code, w.Body.String())
	}
	if strings.Contains(w.Body.String(), "sk-logged-key-0000") {
		t.Errorf("a full key in the request log: %s", w.Body.String())
	}
	list := func(q string) []string {
		t.Helper()
		w := e.admin(http.MethodGet, "/admin/api/requests"+q, "")
		if w.Code != http.StatusOK {
			t.Fatalf("list %s: %d %s", q, w.Code, w.Body.String())
		}
		var out []string
		for _, r := range gjson.Get(w.Body.String(), "requests").Array() {
			out = append(out, r.Get("id").String())
		}
		return out
	}
	if got := list(""); len(got) != 1 || got[0] != rid {
		t.Errorf("with sample 0 the log holds %v, want only the retried request %s", got, rid)
	}
	for _, k := range ids {
		if got := list("?key=" + strconv.FormatInt(k, 10)); len(got) != 1 {
			t.Errorf("key %d: %v, want the retried request (it tried both keys)", k, got)
		}
	}
	if got := list("?status=5xx"); len(got) != 0 {
		t.Errorf("status 5xx: %v, want none", got)
	}

	e.putSettings(`{"request_log_sample":1}`)
	e.advance(time.Second) // ids order by time: the sampled one is newer
	sampled := e.chat("gpt-4o-mini").Header().Get(proxy.RequestIDHeader)
	if got := list(""); len(got) != 2 || got[0] != sampled {
		t.Errorf("with sample 1: %v, want the sampled request first, then %s", got, rid)
	}
	page := e.admin(http.MethodGet, "/admin/api/requests?limit=1", "")
	next := gjson.Get(page.Body.String(), "next_before").String()
	if got := list("?limit=1&before=" + next); len(got) != 1 || got[0] != rid {
		t.Errorf("the second page: %v, want %s", got, rid)
	}
	for _, q := range []string{"?status=3xx", "?class=odd", "?key=x", "?before=!", "?provider=nope"} {
		w := e.admin(http.MethodGet, "/admin/api/requests"+q, "")
		param := strings.SplitN(strings.TrimPrefix(q, "?"), "=", 2)[0]
		if w.Code != http.StatusBadRequest || gjson.Get(w.Body.String(), "error.param").String() != param {
			t.Errorf("%s: %d %s, want 400 naming %s", q, w.Code, w.Body.String(), param)
		}
	}
	if w := e.admin(http.MethodGet, "/admin/api/requests/zzzzzz", ""); w.Code != http.StatusNotFound {
		t.Errorf("an unknown id: %d %s", w.Code, w.Body.String())
	}
}
