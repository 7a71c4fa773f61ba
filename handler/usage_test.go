package handler

import (
	"bytes"
	"context"
	"encoding/csv"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tidwall/gjson"

	"github.com/keypool/keypool/e2e/fakeupstream"
	"github.com/keypool/keypool/proxy"
	"github.com/keypool/keypool/store"
)

// Usage accounting, end to end: requests through the handler land in
// usage_rollups (real SQLite) with the tokens the fake upstream reported.

// rollup is one usage_rollups row.
type rollup struct {
	Gran     string
	Bucket   int64
	Token    int64
	Key      int64
	Provider string
	Model    string
	store.Counts
}

// rollups reads the rows of granularity gran ("m" or "d").
func (e *testEnv) rollups(gran string) []rollup {
	e.t.Helper()
	rows, err := e.db.QueryContext(context.Background(), `SELECT granularity, bucket, token_id, key_id, provider, model,
		requests, successes, client_errors, upstream_errors, rejected, prompt_tokens, completion_tokens, estimated, latency_ms
		FROM usage_rollups WHERE granularity = ? ORDER BY bucket, token_id, key_id, provider, model`, gran)
	if err != nil {
		e.t.Fatal(err)
	}
	defer rows.Close()
	var out []rollup
	for rows.Next() {
		var r rollup
		if err := rows.Scan(&r.Gran, &r.Bucket, &r.Token, &r.Key, &r.Provider, &r.Model, &r.Requests, &r.Successes,
			&r.ClientErrors, &r.UpstreamErrors, &r.Rejected, &r.PromptTokens, &r.CompletionTokens, &r.Estimated, &r.LatencyMS); err != nil {
			e.t.Fatal(err)
		}
		out = append(out, r)
	}
	return out
}

// onlyRollup returns the single minute row, checking that the day row
// holds the same counts.
func (e *testEnv) onlyRollup() rollup {
	e.t.Helper()
	m, d := e.rollups("m"), e.rollups("d")
	if len(m) != 1 || len(d) != 1 {
		e.t.Fatalf("want one minute and one day row, got\n%+v\n%+v", m, d)
	}
	if d[0].Counts != m[0].Counts || d[0].Token != m[0].Token || d[0].Key != m[0].Key || d[0].Model != m[0].Model ||
		d[0].Bucket != m[0].Bucket/86_400_000*86_400_000 {
		e.t.Errorf("day row %+v does not match minute row %+v", d[0], m[0])
	}
	return m[0]
}

var minute0 = t0.UnixMilli() / 60000 * 60000

// usageTokenNew creates a client token through the admin API and returns
// its id and secret.
func (e *testEnv) usageTokenNew(body string) (int64, string) {
	e.t.Helper()
	w := e.admin(http.MethodPost, "/admin/api/tokens", body)
	if w.Code != http.StatusCreated {
		e.t.Fatalf("POST /admin/api/tokens %s: %d %s", body, w.Code, w.Body.String())
	}
	r := gjson.Parse(w.Body.String())
	if r.Get("id").Int() <= 0 || r.Get("token").String() == "" {
		e.t.Fatalf("token without id or secret: %s", w.Body.String())
	}
	return r.Get("id").Int(), r.Get("token").String()
}

// withToken is the request headers of a JSON call with a client token.
func withToken(secret string) []string {
	return []string{"Authorization", "Bearer " + secret, "Content-Type", "application/json"}
}

const chatBody = `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}`

func TestUsageNonStream(t *testing.T) {
	for _, flush := range []string{"0", "5"} {
		t.Run("USAGE_FLUSH_SECONDS="+flush, func(t *testing.T) {
			e := newEnv(t, "USAGE_FLUSH_SECONDS", flush)
			ids := e.addKeys("openai", "sk-usage-key-000001")
			// The upstream takes 250 ms to answer.
			e.fetch = func(r *http.Request) (*http.Response, error) {
				e.advance(250 * time.Millisecond)
				return http.DefaultClient.Do(r)
			}
			wantServed(t, e.chat("gpt-4o-mini"), "1")
			want := rollup{"m", minute0, 0, ids[0], "openai", "gpt-4o-mini",
				store.Counts{Requests: 1, Successes: 1, PromptTokens: 5, CompletionTokens: 7, LatencyMS: 250}}
			if got := e.onlyRollup(); got != want {
				t.Fatalf("after one request:\n got %+v\nwant %+v", got, want)
			}
			// A second request in the same minute adds up.
			wantServed(t, e.chat("gpt-4o-mini"), "1")
			if flush == "5" {
				// Not written yet: the last flush was 250 ms ago.
				if got := e.onlyRollup(); got.Requests != 1 {
					t.Fatalf("written within USAGE_FLUSH_SECONDS: %+v", got)
				}
				e.advance(5 * time.Second)
				e.setNow(t0.Add(20 * time.Second))
				wantServed(t, e.chat("gpt-4o-mini"), "1")
				want.Counts.Add(want.Counts)
				want.Counts.Add(store.Counts{Requests: 1, Successes: 1, PromptTokens: 5, CompletionTokens: 7, LatencyMS: 250})
			} else {
				want.Counts.Add(want.Counts)
			}
			if got := e.onlyRollup(); got != want {
				t.Fatalf("after the flush:\n got %+v\nwant %+v", got, want)
			}
			// The next minute is a new minute row, the same day row.
			e.setNow(t0.Add(90 * time.Second))
			wantServed(t, e.chat("gpt-4o-mini"), "1")
			if flush == "5" {
				e.setNow(t0.Add(100 * time.Second))
				e.chat("gpt-4o-mini")
			}
			m, d := e.rollups("m"), e.rollups("d")
			if len(m) != 2 || m[1].Bucket != minute0+60000 || len(d) != 1 || d[0].Requests != m[0].Requests+m[1].Requests {
				t.Errorf("two minutes: minute rows %+v, day rows %+v", m, d)
			}
		})
	}
}

// TestUsageByFamily: the counts of every provider family's JSON answer.
func TestUsageByFamily(t *testing.T) {
	tests := []struct {
		name, prov, method, target, body, model string
		prompt, completion                      int64
	}{
		{"openai chat", "openai", "POST", "/v1/chat/completions", chatBody, "gpt-4o-mini", 5, 7},
		{"responses api", "openai", "POST", "/v1/responses", `{"model":"gpt-4o","input":"hi"}`, "gpt-4o", 5, 7},
		{"embeddings", "openai", "POST", "/v1/embeddings", `{"model":"text-embedding-3-small","input":"hi"}`, "text-embedding-3-small", 3, 0},
		{"anthropic messages", "anthropic", "POST", "/api/anthropic/v1/messages", `{"model":"claude-3-5-haiku-latest","max_tokens":10,"messages":[{"role":"user","content":"hi"}]}`, "claude-3-5-haiku-latest", 3, 6},
		{"gemini generateContent", "google-ai-studio", "POST", "/api/google-ai-studio/v1beta/models/gemini-2.0-flash:generateContent", `{"contents":[{"parts":[{"text":"hi"}]}]}`, "gemini-2.0-flash", 5, 7},
		{"provider prefix", "groq", "POST", "/v1/chat/completions", `{"model":"groq/llama-3.1-8b-instant","messages":[]}`, "llama-3.1-8b-instant", 5, 7},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, "USAGE_FLUSH_SECONDS", "0", "CF_AIG_TOKEN", "")
			secret := map[string]string{"openai": "sk-family-key-00001", "anthropic": "sk-ant-family-key-0001",
				"google-ai-studio": "AIzaSyFamilyKey000001", "groq": "gsk_family_key_000001"}[tc.prov]
			ids := e.addKeys(tc.prov, secret)
			w := e.proxy(tc.method, tc.target, tc.body)
			wantServed(t, w, "1")
			want := rollup{"m", minute0, 0, ids[0], tc.prov, tc.model,
				store.Counts{Requests: 1, Successes: 1, PromptTokens: tc.prompt, CompletionTokens: tc.completion}}
			if got := e.onlyRollup(); got != want {
				t.Errorf("rollup:\n got %+v\nwant %+v", got, want)
			}
		})
	}
}

// TestUsageOutcomes: each outcome class, with its token, key, provider
// and model.
func TestUsageOutcomes(t *testing.T) {
	t.Run("client error relayed", func(t *testing.T) {
		e := newEnv(t, "USAGE_FLUSH_SECONDS", "0")
		ids := e.addKeys("openai", "sk-outcome-key-00001")
		e.up.SetRule("sk-outcome-key-00001", fakeupstream.OpenAIBadRequest("gpt-4o-mini"))
		if w := e.chat("gpt-4o-mini"); w.Code != http.StatusBadRequest {
			t.Fatalf("status %d, want 400", w.Code)
		}
		want := rollup{"m", minute0, 0, ids[0], "openai", "gpt-4o-mini", store.Counts{Requests: 1, ClientErrors: 1}}
		if got := e.onlyRollup(); got != want {
			t.Errorf("rollup:\n got %+v\nwant %+v", got, want)
		}
	})
	t.Run("model missing on every key", func(t *testing.T) {
		e := newEnv(t, "USAGE_FLUSH_SECONDS", "0")
		ids := e.addKeys("openai", "sk-outcome-key-00001")
		e.up.SetRule("sk-outcome-key-00001", fakeupstream.OpenAIModelNotFound("gpt-nope"))
		if w := e.chat("gpt-nope"); w.Code != http.StatusNotFound {
			t.Fatalf("status %d, want 404", w.Code)
		}
		want := rollup{"m", minute0, 0, ids[0], "openai", "gpt-nope", store.Counts{Requests: 1, ClientErrors: 1}}
		if got := e.onlyRollup(); got != want {
			t.Errorf("rollup:\n got %+v\nwant %+v", got, want)
		}
	})
	t.Run("every key 500: upstream error", func(t *testing.T) {
		e := newEnv(t, "USAGE_FLUSH_SECONDS", "0")
		e.addKeys("openai", "sk-broken-key-00001", "sk-broken-key-00002")
		e.up.SetRule("sk-broken-key-00001", fakeupstream.OpenAIServerError())
		e.up.SetRule("sk-broken-key-00002", fakeupstream.OpenAIServerError())
		wantError(t, e.chat("gpt-4o-mini"), http.StatusBadGateway, "upstream_error")
		want := rollup{"m", minute0, 0, 0, "openai", "gpt-4o-mini", store.Counts{Requests: 1, UpstreamErrors: 1}}
		if got := e.onlyRollup(); got != want {
			t.Errorf("rollup:\n got %+v\nwant %+v", got, want)
		}
	})
	t.Run("no key: rejected", func(t *testing.T) {
		e := newEnv(t, "USAGE_FLUSH_SECONDS", "0")
		wantError(t, e.chat("gpt-4o-mini"), http.StatusServiceUnavailable, "no_available_key")
		want := rollup{"m", minute0, 0, 0, "openai", "gpt-4o-mini", store.Counts{Requests: 1, Rejected: 1}}
		if got := e.onlyRollup(); got != want {
			t.Errorf("rollup:\n got %+v\nwant %+v", got, want)
		}
	})
	t.Run("storm: rejected", func(t *testing.T) {
		e := newEnv(t, "USAGE_FLUSH_SECONDS", "0", "STORM_KEYS", "3", "MAX_ATTEMPTS", "5")
		secrets := []string{"sk-storm-key-000001", "sk-storm-key-000002", "sk-storm-key-000003", "sk-storm-key-000004"}
		e.addKeys("openai", secrets...)
		for _, s := range secrets {
			e.up.SetRule(s, fakeupstream.OpenAIRateLimitedNoHint(""))
		}
		wantError(t, e.chat("gpt-4o-mini"), http.StatusTooManyRequests, "upstream_storm") // begins
		n := e.fetches.Load()
		wantError(t, e.chat("gpt-4o-mini"), http.StatusTooManyRequests, "upstream_storm") // held
		if e.fetches.Load() != n {
			t.Errorf("upstream called during the storm")
		}
		want := rollup{"m", minute0, 0, 0, "openai", "gpt-4o-mini", store.Counts{Requests: 2, Rejected: 2}}
		if got := e.onlyRollup(); got != want {
			t.Errorf("rollup:\n got %+v\nwant %+v", got, want)
		}
	})
	t.Run("token quota: rejected under the token", func(t *testing.T) {
		e := newEnv(t, "USAGE_FLUSH_SECONDS", "0")
		ids := e.addKeys("openai", "sk-outcome-key-00001")
		tid, secret := e.usageTokenNew(`{"name":"u","requests_day":1}`)
		wantServed(t, e.serve(http.MethodPost, "/v1/chat/completions", chatBody, withToken(secret)...), "1")
		wantError(t, e.serve(http.MethodPost, "/v1/chat/completions", chatBody, withToken(secret)...), http.StatusTooManyRequests, "quota_exceeded")
		// A model the token may not use.
		tid2, secret2 := e.usageTokenNew(`{"name":"v","models":["gpt-4o"]}`)
		wantError(t, e.serve(http.MethodPost, "/v1/chat/completions", chatBody, withToken(secret2)...), http.StatusForbidden, "model_not_allowed")
		want := []rollup{
			{"m", minute0, tid, 0, "openai", "gpt-4o-mini", store.Counts{Requests: 1, Rejected: 1}},
			{"m", minute0, tid, ids[0], "openai", "gpt-4o-mini", store.Counts{Requests: 1, Successes: 1, PromptTokens: 5, CompletionTokens: 7}},
			{"m", minute0, tid2, 0, "openai", proxy.RefusedModel, store.Counts{Requests: 1, Rejected: 1}},
		}
		if got := e.rollups("m"); !reflect.DeepEqual(got, want) {
			t.Errorf("rollups:\n got %+v\nwant %+v", got, want)
		}
	})
}

// inserted reports whether out is in with insert added at one place.
func inserted(in, out []byte, insert string) bool {
	if len(out) != len(in)+len(insert) {
		return false
	}
	for i := 0; i <= len(in); i++ {
		if bytes.Equal(out[:i], in[:i]) && string(out[i:i+len(insert)]) == insert && bytes.Equal(out[i+len(insert):], in[i:]) {
			return true
		}
		if i < len(in) && out[i] != in[i] {
			return false
		}
	}
	return false
}

func TestUsageStream(t *testing.T) {
	tests := []struct {
		name   string
		body   string
		asked  bool   // the client asked include_usage true
		insert string // what keypool adds to the body ("" none)
		// estimated: the stream had no usage
		estimated bool
	}{
		{"client did not ask: asked for, stripped", `{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hi"}]}`,
			false, `"stream_options":{"include_usage":true},`, false},
		{"client options without include_usage", `{"model":"gpt-4o-mini","stream":true,"stream_options":{},"messages":[]}`,
			false, `"include_usage":true`, false},
		{"client asked: untouched", `{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},"messages":[]}`,
			true, "", false},
		{"client said no: untouched, estimated", `{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":false},"messages":[]}`,
			false, "", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, "USAGE_FLUSH_SECONDS", "0")
			ids := e.addKeys("openai", "sk-stream-key-000001")
			w := e.proxy(http.MethodPost, "/v1/chat/completions", tc.body)
			wantServed(t, w, "1")
			if ct := w.Header().Get("Content-Type"); ct != "text/event-stream" {
				t.Errorf("Content-Type %q", ct)
			}
			reqs := e.requests()
			if len(reqs) != 1 {
				t.Fatalf("%d upstream requests", len(reqs))
			}
			up := reqs[0]
			switch {
			case tc.insert != "":
				if !inserted([]byte(tc.body), up.Body, tc.insert) {
					t.Errorf("upstream body is not the client's with %q inserted:\n client %s\nupstream %s", tc.insert, tc.body, up.Body)
				}
				if gjson.GetBytes(up.Body, "stream_options.include_usage").Type != gjson.True {
					t.Errorf("upstream body without include_usage true: %s", up.Body)
				}
			default:
				if string(up.Body) != tc.body {
					t.Errorf("upstream body changed:\n got %s\nwant %s", up.Body, tc.body)
				}
			}
			sent := string(up.Sent)
			usageChunk := fakeupstream.StreamUsageChunk("gpt-4o-mini")
			switch {
			case tc.insert != "":
				// The client gets the upstream's bytes minus the usage chunk.
				if !strings.Contains(sent, usageChunk) {
					t.Fatalf("the upstream sent no usage chunk: %q", sent)
				}
				if want := strings.Replace(sent, usageChunk, "", 1); w.Body.String() != want {
					t.Errorf("client stream:\n got %q\nwant %q", w.Body.String(), want)
				}
				if want := strings.Join(fakeupstream.StreamChunks("gpt-4o-mini"), ""); w.Body.String() != want {
					t.Errorf("client stream is not what it would be without the usage chunk:\n got %q\nwant %q", w.Body.String(), want)
				}
			default:
				if w.Body.String() != sent {
					t.Errorf("client stream not byte-identical:\n got %q\nsent %q", w.Body.String(), sent)
				}
				if tc.asked != strings.Contains(sent, usageChunk) {
					t.Errorf("usage chunk sent = %v, want %v", !tc.asked, tc.asked)
				}
			}
			got := e.onlyRollup()
			want := rollup{"m", minute0, 0, ids[0], "openai", "gpt-4o-mini",
				store.Counts{Requests: 1, Successes: 1, PromptTokens: 5, CompletionTokens: 7}}
			if tc.estimated {
				// From the sizes: the request body and the text of the events.
				data := streamText(fakeupstream.StreamChunks("gpt-4o-mini"))
				want.Counts = store.Counts{Requests: 1, Successes: 1, PromptTokens: (int64(len(tc.body)) + 3) / 4,
					CompletionTokens: (data + 3) / 4, Estimated: 1}
			}
			if got != want {
				t.Errorf("rollup:\n got %+v\nwant %+v", got, want)
			}
		})
	}
}

// TestUsageStreamNative: a stream on a native route is not asked for its
// usage; without any, it is estimated from the sizes.
func TestUsageStreamNative(t *testing.T) {
	e := newEnv(t, "USAGE_FLUSH_SECONDS", "0", "CF_AIG_TOKEN", "")
	ids := e.addKeys("openai", "sk-native-key-000001")
	body := `{"model":"gpt-4o-mini","stream":true,"messages":[]}`
	w := e.proxy(http.MethodPost, "/api/openai/chat/completions", body)
	wantServed(t, w, "1")
	want := strings.Join(fakeupstream.StreamChunks("gpt-4o-mini"), "")
	if w.Body.String() != want {
		t.Errorf("stream changed:\n got %q\nwant %q", w.Body.String(), want)
	}
	if got := string(e.requests()[0].Body); got != body {
		t.Errorf("native body changed: %s", got)
	}
	data := streamText(fakeupstream.StreamChunks("gpt-4o-mini"))
	wantRow := rollup{"m", minute0, 0, ids[0], "openai", "gpt-4o-mini",
		store.Counts{Requests: 1, Successes: 1, PromptTokens: (int64(len(body)) + 3) / 4, CompletionTokens: (data + 3) / 4, Estimated: 1}}
	if got := e.onlyRollup(); got != wantRow {
		t.Errorf("rollup:\n got %+v\nwant %+v", got, wantRow)
	}
}

// TestUsageEstimated: answers without usage are estimated from sizes:
// JSON both ways; a binary answer counts only the request.
func TestUsageEstimated(t *testing.T) {
	t.Run("json without usage", func(t *testing.T) {
		e := newEnv(t, "USAGE_FLUSH_SECONDS", "0")
		ids := e.addKeys("openai", "sk-estimate-key-00001")
		body := `{"model":"dall-e-3","prompt":"a white siamese cat","n":1,"size":"1024x1024"}`
		w := e.proxy(http.MethodPost, "/v1/images/generations", body)
		wantServed(t, w, "1")
		if w.Body.String() != fakeupstream.ImageGeneration {
			t.Fatalf("body %s", w.Body.String())
		}
		want := rollup{"m", minute0, 0, ids[0], "openai", "dall-e-3", store.Counts{Requests: 1, Successes: 1,
			PromptTokens: (int64(len(body)) + 3) / 4, CompletionTokens: (int64(len(fakeupstream.ImageGeneration)) + 3) / 4, Estimated: 1}}
		if got := e.onlyRollup(); got != want {
			t.Errorf("rollup:\n got %+v\nwant %+v", got, want)
		}
	})
	t.Run("audio answer", func(t *testing.T) {
		e := newEnv(t, "USAGE_FLUSH_SECONDS", "0")
		ids := e.addKeys("openai", "sk-estimate-key-00001")
		body := `{"model":"tts-1","input":"Hello world","voice":"alloy"}`
		w := e.proxy(http.MethodPost, "/v1/audio/speech", body)
		wantServed(t, w, "1")
		if !bytes.Equal(w.Body.Bytes(), fakeupstream.SpeechAudio()) {
			t.Fatalf("audio changed")
		}
		want := rollup{"m", minute0, 0, ids[0], "openai", "tts-1", store.Counts{Requests: 1, Successes: 1,
			PromptTokens: (int64(len(body)) + 3) / 4, Estimated: 1}}
		if got := e.onlyRollup(); got != want {
			t.Errorf("rollup:\n got %+v\nwant %+v", got, want)
		}
	})
}

// TestUsageTokensDayQuota: tokens are counted when the answer is read;
// with tokens_day 20 and 12 tokens an answer, the third request is refused.
func TestUsageTokensDayQuota(t *testing.T) {
	for _, flush := range []string{"0", "5"} {
		for _, stream := range []bool{false, true} {
			t.Run("USAGE_FLUSH_SECONDS="+flush+"/stream="+strconv.FormatBool(stream), func(t *testing.T) {
				e := newEnv(t, "USAGE_FLUSH_SECONDS", flush)
				e.addKeys("openai", "sk-tquota-key-000001")
				tid, secret := e.usageTokenNew(`{"name":"t","tokens_day":20}`)
				body := chatBody
				if stream {
					body = `{"model":"gpt-4o-mini","stream":true,"messages":[]}`
				}
				for i := 1; i <= 2; i++ {
					e.advance(time.Second)
					if w := e.serve(http.MethodPost, "/v1/chat/completions", body, withToken(secret)...); w.Code != http.StatusOK {
						t.Fatalf("request %d: %d %s", i, w.Code, w.Body.String())
					}
				}
				e.advance(time.Second)
				w := e.serve(http.MethodPost, "/v1/chat/completions", body, withToken(secret)...)
				er := wantError(t, w, http.StatusTooManyRequests, "quota_exceeded")
				if !strings.Contains(er.Error.Message, "daily token quota (20)") {
					t.Errorf("message %q", er.Error.Message)
				}
				if got := len(e.requests()); got != 2 {
					t.Errorf("%d upstream calls, want 2", got)
				}
				// Once written, the token shows 24 tokens used today.
				e.advance(10 * time.Second)
				e.chat("gpt-4o-mini") // AUTH_KEY: flushes what is due
				var dayTokens, usedTokens int64
				if err := e.db.QueryRow(`SELECT day_tokens, used_tokens FROM tokens WHERE id = ?`, tid).Scan(&dayTokens, &usedTokens); err != nil {
					t.Fatal(err)
				}
				if dayTokens != 24 || usedTokens != 24 {
					t.Errorf("token used %d today, %d in all; want 24 and 24", dayTokens, usedTokens)
				}
			})
		}
	}
}

func TestUsageTokensTotalQuota(t *testing.T) {
	e := newEnv(t, "USAGE_FLUSH_SECONDS", "0")
	e.addKeys("openai", "sk-tquota-key-000001")
	_, secret := e.usageTokenNew(`{"name":"t","tokens_total":13}`)
	for i := 1; i <= 2; i++ {
		if w := e.serve(http.MethodPost, "/v1/chat/completions", chatBody, withToken(secret)...); w.Code != http.StatusOK {
			t.Fatalf("request %d: %d", i, w.Code)
		}
	}
	wantError(t, e.serve(http.MethodPost, "/v1/chat/completions", chatBody, withToken(secret)...), http.StatusTooManyRequests, "quota_exceeded")
}

// TestUsageModelNames: model names with characters gjson paths treat
// specially still add up in the isolate's pending counts.
func TestUsageModelNames(t *testing.T) {
	e := newEnv(t, "USAGE_FLUSH_SECONDS", "3600")
	e.addKeys("openai", "sk-names-key-0000001")
	models := []string{"gpt-4.1-mini", `a.b*c?d|e#f@g!h=i<j>k%l:m`, "日本語", `q"uote`, `back\slash`}
	for _, m := range models {
		for i := 0; i < 3; i++ {
			body := `{"model":` + strconv.Quote(m) + `,"messages":[]}`
			if w := e.proxy(http.MethodPost, "/v1/chat/completions", body); w.Code != http.StatusOK {
				t.Fatalf("%s: %d %s", m, w.Code, w.Body.String())
			}
		}
	}
	e.advance(time.Hour)
	e.chat("gpt-4o-mini")
	got := map[string]int64{}
	for _, r := range e.rollups("m") {
		got[r.Model] += r.Requests
	}
	for _, m := range models {
		if got[m] != 3 {
			t.Errorf("model %q: %d requests, want 3 (all: %v)", m, got[m], got)
		}
	}
}

// statsFixture serves requests over two minutes and two days, from
// AUTH_KEY and a token, to two providers, with one failure.
func statsFixture(t *testing.T) (*testEnv, int64, []int64) {
	e := newEnv(t, "USAGE_FLUSH_SECONDS", "0")
	oa := e.addKeys("openai", "sk-stats-key-0000001")
	gq := e.addKeys("groq", "gsk_stats_key_000001")
	tid, secret := e.usageTokenNew(`{"name":"s"}`)
	e.setNow(t0.Add(-24 * time.Hour)) // yesterday
	wantServed(t, e.chat("gpt-4o-mini"), "1")
	e.setNow(t0) // 12:00
	wantServed(t, e.chat("gpt-4o-mini"), "1")
	wantServed(t, e.chat("gpt-4o"), "1")
	wantServed(t, e.serve(http.MethodPost, "/v1/chat/completions", chatBody, withToken(secret)...), "1")
	e.setNow(t0.Add(time.Minute)) // 12:01
	wantServed(t, e.proxy(http.MethodPost, "/v1/chat/completions", `{"model":"groq/llama-3.1-8b-instant","messages":[]}`), "1")
	e.up.SetRule("sk-stats-key-0000001", fakeupstream.OpenAIBadRequest("gpt-4o-mini"))
	if w := e.serve(http.MethodPost, "/v1/chat/completions", chatBody, withToken(secret)...); w.Code != http.StatusBadRequest {
		t.Fatalf("status %d", w.Code)
	}
	e.setNow(t0.Add(2*time.Minute + 30*time.Second)) // 12:02:30
	return e, tid, []int64{oa[0], gq[0]}
}

type statsJSON struct {
	Granularity string           `json:"granularity"`
	From        int64            `json:"from"`
	To          int64            `json:"to"`
	Group       *string          `json:"group"`
	Points      []map[string]any `json:"points"`
	Totals      map[string]any   `json:"totals"`
}

func (e *testEnv) stats(query string) statsJSON {
	e.t.Helper()
	w := e.admin(http.MethodGet, "/admin/api/stats"+query, "")
	if w.Code != http.StatusOK {
		e.t.Fatalf("stats%s: %d %s", query, w.Code, w.Body.String())
	}
	var s statsJSON
	decode(e.t, w, &s)
	return s
}

// num reads a JSON number field.
func num(m map[string]any, k string) int64 {
	f, _ := m[k].(float64)
	return int64(f)
}

func TestStatsJSON(t *testing.T) {
	e, tid, keys := statsFixture(t)
	m0, m1 := minute0, minute0+60000

	// Defaults: the last hour per minute.
	s := e.stats("")
	if s.Granularity != "minute" || s.Group != nil || s.From != m0+2*60000-59*60000 || s.To != m0+3*60000 {
		t.Errorf("defaults: %+v", s)
	}
	if len(s.Points) != 2 || num(s.Points[0], "bucket") != m0 || num(s.Points[1], "bucket") != m1 {
		t.Fatalf("points %+v", s.Points)
	}
	p0 := s.Points[0]
	if num(p0, "requests") != 3 || num(p0, "successes") != 3 || num(p0, "prompt_tokens") != 15 || num(p0, "completion_tokens") != 21 ||
		num(p0, "total_tokens") != 36 || p0["success_rate"] != 1.0 || num(p0, "latency_avg_ms") != 0 || num(p0, "estimated") != 0 {
		t.Errorf("12:00 point %+v", p0)
	}
	tot := s.Totals
	if num(tot, "requests") != 5 || num(tot, "successes") != 4 || num(tot, "client_errors") != 1 || num(tot, "prompt_tokens") != 20 ||
		num(tot, "completion_tokens") != 28 || num(tot, "total_tokens") != 48 || tot["success_rate"] != 0.8 {
		t.Errorf("totals %+v", tot)
	}
	if _, ok := p0["model"]; ok {
		t.Errorf("a group field without grouping: %+v", p0)
	}

	// Per day over the default 30 days: yesterday and today.
	s = e.stats("?granularity=day")
	if s.Granularity != "day" || len(s.Points) != 2 || num(s.Points[0], "requests") != 1 || num(s.Points[1], "requests") != 5 {
		t.Errorf("days: %+v", s)
	}
	if day := t0.UnixMilli() / 86_400_000 * 86_400_000; num(s.Points[1], "bucket") != day || num(s.Points[0], "bucket") != day-86_400_000 {
		t.Errorf("day buckets %+v", s.Points)
	}

	// Grouping.
	groups := func(s statsJSON, field string) map[string]int64 {
		out := map[string]int64{}
		for _, p := range s.Points {
			out[p[field].(string)] += num(p, "requests")
		}
		return out
	}
	tests := []struct {
		query, field string
		want         map[string]int64
	}{
		{"?group=model", "model", map[string]int64{"openai/gpt-4o-mini": 3, "openai/gpt-4o": 1, "groq/llama-3.1-8b-instant": 1}},
		{"?group=provider", "provider", map[string]int64{"openai": 4, "groq": 1}},
		{"?group=token", "token", map[string]int64{"0": 3, strconv.FormatInt(tid, 10): 2}},
		{"?group=key", "key", map[string]int64{strconv.FormatInt(keys[0], 10): 4, strconv.FormatInt(keys[1], 10): 1}},
		{"?granularity=day&group=model&from=0", "model", map[string]int64{"openai/gpt-4o-mini": 4, "openai/gpt-4o": 1, "groq/llama-3.1-8b-instant": 1}},
	}
	for _, tc := range tests {
		s := e.stats(tc.query)
		if s.Group == nil || *s.Group != tc.field {
			t.Errorf("%s: group %v", tc.query, s.Group)
		}
		if got := groups(s, tc.field); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: %v, want %v", tc.query, got, tc.want)
		}
	}

	// Filters.
	filters := []struct {
		query            string
		requests, tokens int64
	}{
		{"?provider=groq", 1, 12},
		{"?provider=openai&model=gpt-4o-mini", 3, 24},
		{"?model=gpt-4o", 1, 12},
		{"?token=0", 3, 36},
		{"?token=" + strconv.FormatInt(tid, 10), 2, 12},
		{"?key=" + strconv.FormatInt(keys[1], 10), 1, 12},
		{"?from=" + strconv.FormatInt(m1, 10), 2, 12},
		{"?from=" + strconv.FormatInt(m0, 10) + "&to=" + strconv.FormatInt(m1, 10), 3, 36},
		{"?from=0&to=" + strconv.FormatInt(m0, 10), 1, 12}, // yesterday's
		{"?from=" + strconv.FormatInt(m1+60000, 10), 0, 0},
		{"?granularity=day&from=0&token=0&provider=openai", 3, 36},
		{"?provider=mistral", 0, 0},
	}
	for _, f := range filters {
		s := e.stats(f.query)
		if num(s.Totals, "requests") != f.requests || num(s.Totals, "total_tokens") != f.tokens {
			t.Errorf("%s: totals %+v, want %d requests and %d tokens", f.query, s.Totals, f.requests, f.tokens)
		}
		if f.requests == 0 && (len(s.Points) != 0 || s.Totals["success_rate"] != nil || s.Totals["latency_avg_ms"] != nil) {
			t.Errorf("%s: empty series %+v", f.query, s)
		}
	}
}

func TestStatsBadQueries(t *testing.T) {
	e := newEnv(t)
	for _, q := range []string{"granularity=hour", "from=x", "from=-1", "to=1.5", "key=k", "token=-2", "token=abc",
		"group=day", "format=xml", "from=100&to=100", "from=200&to=100"} {
		for _, path := range []string{"/admin/api/stats?", "/admin/api/stats/now?"} {
			w := e.admin(http.MethodGet, path+q, "")
			wantError(t, w, http.StatusBadRequest, "invalid_request")
		}
	}
	// The admin password is required.
	if w := e.serve(http.MethodGet, "/admin/api/stats", ""); w.Code != http.StatusUnauthorized {
		t.Errorf("stats without the admin password: %d", w.Code)
	}
	if w := e.proxy(http.MethodGet, "/admin/api/stats/now", ""); w.Code != http.StatusUnauthorized {
		t.Errorf("stats/now with the client token: %d", w.Code)
	}
}

func TestStatsCSV(t *testing.T) {
	e, tid, _ := statsFixture(t)
	w := e.admin(http.MethodGet, "/admin/api/stats?format=csv&group=token", "")
	if w.Code != http.StatusOK || !strings.HasPrefix(w.Header().Get("Content-Type"), "text/csv") ||
		!strings.Contains(w.Header().Get("Content-Disposition"), "attachment") {
		t.Fatalf("%d %v", w.Code, w.Header())
	}
	body := w.Body.String()
	if strings.Contains(strings.ReplaceAll(body, "\r\n", ""), "\n") {
		t.Errorf("lines not ended with CRLF: %q", body)
	}
	recs, err := csv.NewReader(strings.NewReader(body)).ReadAll()
	if err != nil {
		t.Fatalf("not CSV: %v\n%s", err, body)
	}
	head := "bucket,time,token,requests,successes,client_errors,upstream_errors,rejected,prompt_tokens,completion_tokens,total_tokens,estimated,latency_avg_ms,cached_tokens"
	if strings.Join(recs[0], ",") != head {
		t.Errorf("header %q, want %q", recs[0], head)
	}
	tok := strconv.FormatInt(tid, 10)
	m0 := strconv.FormatInt(minute0, 10)
	m1 := strconv.FormatInt(minute0+60000, 10)
	want := [][]string{
		{m0, "2025-06-01T12:00:00Z", "0", "2", "2", "0", "0", "0", "10", "14", "24", "0", "0", "0"},
		{m0, "2025-06-01T12:00:00Z", tok, "1", "1", "0", "0", "0", "5", "7", "12", "0", "0", "0"},
		{m1, "2025-06-01T12:01:00Z", "0", "1", "1", "0", "0", "0", "5", "7", "12", "0", "0", "0"},
		{m1, "2025-06-01T12:01:00Z", tok, "1", "0", "1", "0", "0", "0", "0", "0", "0", "0", "0"},
	}
	if !reflect.DeepEqual(recs[1:], want) {
		t.Errorf("rows:\n got %q\nwant %q", recs[1:], want)
	}
	// Without grouping there is no group column.
	w = e.admin(http.MethodGet, "/admin/api/stats?format=csv&granularity=day&from=0", "")
	recs, _ = csv.NewReader(strings.NewReader(w.Body.String())).ReadAll()
	if len(recs) != 3 || len(recs[0]) != 13 || recs[0][2] != "requests" || recs[2][2] != "5" {
		t.Errorf("day CSV %q", recs)
	}

	// Quoting: group values with commas and quotes, and formulas defused.
	if err := store.On(e.db, nil).Rollups().Add(context.Background(), []store.Rollup{
		{Minute: minute0, Provider: "openai", Model: `gpt,"4"`, Counts: store.Counts{Requests: 1}},
		{Minute: minute0, Provider: "=HYPERLINK(\"http://x\")", Model: "m", Counts: store.Counts{Requests: 1}},
		{Minute: minute0, Provider: "+1", Model: "m\r\nx", Counts: store.Counts{Requests: 1}},
	}); err != nil {
		t.Fatal(err)
	}
	w = e.admin(http.MethodGet, "/admin/api/stats?format=csv&group=model", "")
	if !strings.Contains(w.Body.String(), `,"openai/gpt,""4""",`) {
		t.Errorf("a comma and quotes not quoted:\n%s", w.Body.String())
	}
	recs, err = csv.NewReader(strings.NewReader(w.Body.String())).ReadAll()
	if err != nil {
		t.Fatalf("not CSV: %v", err)
	}
	got := map[string]bool{}
	for _, r := range recs[1:] {
		got[r[2]] = true
	}
	if !strings.Contains(w.Body.String(), ",\"'+1/m\r\nx\",") {
		t.Errorf("a line break not quoted:\n%q", w.Body.String())
	}
	for _, v := range []string{`openai/gpt,"4"`, `'=HYPERLINK("http://x")/m`, "'+1/m\nx", "openai/gpt-4o-mini"} {
		if !got[v] {
			t.Errorf("group %q missing from %q", v, recs)
		}
	}
}

func TestStatsNow(t *testing.T) {
	e, tid, _ := statsFixture(t)
	// At 12:02:30 the last complete minute is 12:01.
	get := func(q string) map[string]any {
		t.Helper()
		w := e.admin(http.MethodGet, "/admin/api/stats/now"+q, "")
		if w.Code != http.StatusOK {
			t.Fatalf("stats/now: %d %s", w.Code, w.Body.String())
		}
		var m map[string]any
		decode(t, w, &m)
		return m
	}
	m := get("")
	day := t0.UnixMilli() / 86_400_000 * 86_400_000
	if num(m, "minute") != minute0+60000 || num(m, "day") != day || num(m, "rpm") != 2 || num(m, "tpm") != 12 ||
		num(m, "rpd") != 5 || num(m, "tpd") != 48 || m["success_rate_today"] != 0.8 {
		t.Errorf("now %v", m)
	}
	m = get("?token=" + strconv.FormatInt(tid, 10))
	if num(m, "rpm") != 1 || num(m, "tpm") != 0 || num(m, "rpd") != 2 || num(m, "tpd") != 12 || m["success_rate_today"] != 0.5 {
		t.Errorf("now for the token %v", m)
	}
	m = get("?provider=mistral")
	if num(m, "rpd") != 0 || m["success_rate_today"] != nil {
		t.Errorf("now for no requests %v", m)
	}
	// At 12:01:59 the last complete minute is 12:00.
	e.setNow(t0.Add(time.Minute + 59*time.Second))
	if m = get(""); num(m, "minute") != minute0 || num(m, "rpm") != 3 || num(m, "tpm") != 36 {
		t.Errorf("now at 12:01:59 %v", m)
	}
}

// TestStatsIncludePending: the stats include what this isolate has not
// written yet (stats calls flushNow for that).
func TestStatsIncludePending(t *testing.T) {
	e := newEnv(t, "USAGE_FLUSH_SECONDS", "5")
	e.addKeys("openai", "sk-pending-key-00001")
	wantServed(t, e.chat("gpt-4o-mini"), "1") // written: the first flush
	e.advance(time.Second)
	wantServed(t, e.chat("gpt-4o-mini"), "1") // pending for 4 s more
	s := e.stats("")
	if got := num(s.Totals, "requests"); got != 2 {
		t.Errorf("/admin/api/stats shows %d requests, want 2: this isolate's pending counts must be included", got)
	}
}

// TestUsageStripHeaders: the stripped stream goes without Content-Length.
func TestUsageStripHeaders(t *testing.T) {
	e := newEnv(t, "USAGE_FLUSH_SECONDS", "0")
	e.addKeys("openai", "sk-strip-key-0000001")
	e.fetch = func(r *http.Request) (*http.Response, error) {
		resp, err := http.DefaultClient.Do(r)
		if err == nil {
			resp.Header.Set("Content-Length", "999")
		}
		return resp, err
	}
	w := e.proxy(http.MethodPost, "/v1/chat/completions", `{"model":"gpt-4o-mini","stream":true}`)
	wantServed(t, w, "1")
	if cl := w.Header().Get("Content-Length"); cl != "" {
		t.Errorf("Content-Length %q on a stream keypool changed", cl)
	}
}

// TestUsageStreamMistral: Mistral's OpenAI-compatible API refuses
// stream_options with 422 extra_forbidden (and sends usage in its last
// chunk unasked); a client that never sent stream_options must still get
// its stream.
func TestUsageStreamMistral(t *testing.T) {
	e := newEnv(t, "USAGE_FLUSH_SECONDS", "0")
	e.addKeys("mistral", "mistral-usage-key-0000000001")
	const refused = `{"object":"error","message":{"detail":[{"type":"extra_forbidden","loc":["body","stream_options","include_usage"],"msg":"Extra inputs are not permitted","input":true}]},"type":"invalid_request_error","param":null,"code":null}`
	e.fetch = func(r *http.Request) (*http.Response, error) {
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
		if gjson.GetBytes(body, "stream_options").Exists() {
			rec := httptest.NewRecorder()
			rec.Header().Set("Content-Type", "application/json")
			rec.WriteHeader(http.StatusUnprocessableEntity)
			rec.WriteString(refused)
			return rec.Result(), nil
		}
		return http.DefaultClient.Do(r)
	}
	w := e.proxy(http.MethodPost, "/v1/chat/completions", `{"model":"mistral/mistral-small-latest","stream":true,"messages":[]}`)
	if w.Code != http.StatusOK {
		t.Errorf("a Mistral stream the client asked without stream_options got %d %s", w.Code, w.Body.String())
	}
}

// streamText is the size an estimate counts of a chat stream: the content
// of its deltas, and the whole data of events that are not JSON ([DONE]).
func streamText(chunks []string) int64 {
	var n int64
	for _, c := range chunks {
		d := strings.TrimSpace(strings.TrimPrefix(c, "data:"))
		if !gjson.Valid(d) {
			n += int64(len(d))
			continue
		}
		n += int64(len(gjson.Get(d, "choices.0.delta.content").String()))
	}
	return n
}
