package proxy

import (
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/tidwall/gjson"

	"github.com/keypool/keypool/provider"
)

// Cloudflare AI Gateway: with CF_ACCOUNT_ID and AI_GATEWAY set, every
// request for a provider the gateway knows goes through it (the paths are
// in the provider table), so its analytics, logs, caching and rate limits
// see all of the pool's traffic.

// maxGatewayMetadata is how many cf-aig-metadata entries the gateway
// keeps: the first five.
const maxGatewayMetadata = 5

// Target is where prov's requests go in this deployment.
func (px *Proxy) Target(prov provider.Provider) provider.Target {
	c := px.Config()
	t := provider.Target{Origin: px.origin(prov), Account: c.AccountID}
	if t.Account != "" && c.Gateway != "" {
		t.Gateway = c.GatewayURL + "/" + url.PathEscape(t.Account) + "/" + url.PathEscape(c.Gateway)
	}
	return t
}

// GatewayHeaders sets what the gateway reads from keypool on a request
// through it: the gateway's token (CF_AIG_TOKEN; never sent anywhere
// else) and metadata saying who used which key. own marks requests
// keypool makes for itself (checks, model lists): a cached answer would
// vouch for a key the provider was never asked about.
func (px *Proxy) GatewayHeaders(hd http.Header, metadata string, own bool) {
	if tok := px.Config().GatewayToken; tok != "" {
		hd.Set("Cf-Aig-Authorization", "Bearer "+tok)
	}
	hd.Set("Cf-Aig-Metadata", metadata)
	if own {
		hd.Set("Cf-Aig-Skip-Cache", "true")
	}
}

// clientMetadata is the cf-aig-metadata of a client's request: the
// token's id and name and the key's id (never a secret), first, since the
// gateway keeps only the first five entries; then the client's own, when
// the gateway_headers setting lets it send the header, minus any entry
// that would pass for keypool's.
func clientMetadata(c client, keyID int64, theirs string) string {
	id, name := int64(0), "AUTH_KEY"
	if c.tok != nil {
		id, name = c.tok.ID, c.tok.Name
	}
	b := make([]byte, 0, 96+len(name)+len(theirs))
	b = append(b, `{"keypool_token":`...)
	b = strconv.AppendInt(b, id, 10)
	b = append(b, `,"keypool_token_name":`...)
	b = appendASCIIString(b, name)
	b = append(b, `,"keypool_key":`...)
	b = strconv.AppendInt(b, keyID, 10)
	n := 3
	if theirs != "" && gjson.Valid(theirs) {
		gjson.Parse(theirs).ForEach(func(k, v gjson.Result) bool {
			if n >= maxGatewayMetadata {
				return false
			}
			if strings.HasPrefix(k.String(), "keypool_") || v.IsObject() || v.IsArray() || v.Type == gjson.Null {
				return true
			}
			b = append(b, ',')
			b = appendASCIIString(b, k.String())
			b = append(b, ':')
			if v.Type == gjson.String {
				b = appendASCIIString(b, v.String())
			} else {
				b = append(b, v.Raw...)
			}
			n++
			return true
		})
	}
	return string(append(b, '}'))
}

// appendASCIIString appends s as a JSON string of printable ASCII only:
// a header value the runtime's fetch accepts whatever the admin named a
// token.
func appendASCIIString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	u := func(b []byte, r rune) []byte {
		return append(b, '\\', 'u', hex[r>>12&0xf], hex[r>>8&0xf], hex[r>>4&0xf], hex[r&0xf])
	}
	b = append(b, '"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b = append(b, '\\', byte(r))
		case r >= 0x20 && r < 0x7f:
			b = append(b, byte(r))
		case r > 0xffff:
			r1, r2 := utf16.EncodeRune(r)
			b = u(u(b, r1), r2)
		case r == utf8.RuneError:
			b = u(b, 0xfffd)
		default:
			b = u(b, r)
		}
	}
	return append(b, '"')
}
