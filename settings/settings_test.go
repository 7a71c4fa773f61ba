package settings

import "testing"

func TestParseHeaderNames(t *testing.T) {
	tests := []struct {
		value   string
		gateway bool
		ok      bool
	}{
		{`["X-Test-Id","x-my-tag"]`, false, true},
		{`[]`, false, true},
		{`"X-Test-Id"`, false, false},
		{`[1]`, false, false},
		{`["bad header"]`, false, false},
		{`["X-Evil\r\nHost"]`, false, false},
		{`[""]`, false, false},
		{`["OpenAI-Organization"]`, false, false},
		{`["OpenAI-Project"]`, false, false},
		{`["x-goog-user-project"]`, false, false},
		{`["ChatGPT-Account-Id"]`, false, false},
		{`["Authorization"]`, false, false},
		{`["x-api-key"]`, false, false},
		{`["Cookie"]`, false, false},
		{`["X-Forwarded-For"]`, false, false},
		{`["Proxy-Authorization"]`, false, false},
		{`["Connection"]`, false, false},
		{`["Host"]`, false, false},
		{`["cf-connecting-ip"]`, false, false},
		{`["cf-aig-metadata"]`, false, false}, // gateway options go in gateway_headers
		{`["cf-aig-metadata","CF-AIG-COLLECT-LOG"]`, true, true},
		{`["cf-aig-authorization"]`, true, false},
		{`["cf-aig-byok-alias"]`, true, false},
		{`["x-custom"]`, true, false},
	}
	for _, tc := range tests {
		_, msg := parseHeaderNames(tc.value, tc.gateway)
		if (msg == "") != tc.ok {
			t.Errorf("parseHeaderNames(%s, gateway %v): %q, want ok %v", tc.value, tc.gateway, msg, tc.ok)
		}
	}
}
