package proxy

import (
	"testing"

	"github.com/tidwall/gjson"

	"github.com/keypool/keypool/store"
)

func TestClientMetadata(t *testing.T) {
	named := client{tok: &store.Token{ID: 7, Name: "café \"ops\" 🚀"}}
	tests := []struct {
		name   string
		c      client
		theirs string
		want   string
	}{
		{"AUTH_KEY", client{}, "", `{"keypool_token":0,"keypool_token_name":"AUTH_KEY","keypool_key":12}`},
		// Printable ASCII whatever the name: a header value fetch accepts.
		{"token", named, "", `{"keypool_token":7,"keypool_token_name":"caf\u00e9 \"ops\" \ud83d\ude80","keypool_key":12}`},
		// The client's own entries follow, up to the gateway's five,
		// without any that would pass for keypool's or that it refuses.
		{"merged", named, `{"team":"ml","keypool_key":1,"nested":{"a":1},"n":2,"ok":true,"late":"x"}`,
			`{"keypool_token":7,"keypool_token_name":"caf\u00e9 \"ops\" \ud83d\ude80","keypool_key":12,"team":"ml","n":2}`},
		{"not JSON", client{}, `team=ml`, `{"keypool_token":0,"keypool_token_name":"AUTH_KEY","keypool_key":12}`},
	}
	for _, tc := range tests {
		got := clientMetadata(tc.c, 12, tc.theirs)
		if got != tc.want {
			t.Errorf("%s: %s, want %s", tc.name, got, tc.want)
		}
		if !gjson.Valid(got) {
			t.Errorf("%s: not JSON: %s", tc.name, got)
		}
		for i := 0; i < len(got); i++ {
			if got[i] < 0x20 || got[i] > 0x7e {
				t.Errorf("%s: byte %#x is no printable ASCII", tc.name, got[i])
			}
		}
	}
	if got := gjson.Get(clientMetadata(named, 12, ""), "keypool_token_name").String(); got != named.tok.Name {
		t.Errorf("name reads back as %q", got)
	}
}
