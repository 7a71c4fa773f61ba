package proxy

import (
	"hash/fnv"
	"net/http"
	"strconv"
	"strings"

	"github.com/tidwall/gjson"
)

// Prompt-cache affinity (rotation.PickAffine) needs the identity of the
// conversation a request continues. A client that names its session is
// taken at its word; otherwise the identity is derived from what stays
// the same from one turn to the next and is what providers cache first.

// explicitSession is the first session a client names, as the field or
// header it came in and its value ("" when none): keypool's own header,
// OpenAI's prompt_cache_key, Claude Code's and Codex's session headers,
// Anthropic's metadata.user_id (Claude Code puts its session there), and
// OpenAI's user. body is read only when it is JSON.
func explicitSession(h http.Header, body []byte, jsonBody bool) (source, value string) {
	for _, name := range []string{"X-Keypool-Session", "X-Claude-Code-Session-Id", "Session-Id", "Session_id"} {
		if v := h.Get(name); v != "" {
			return name, v
		}
	}
	if !jsonBody {
		return "", ""
	}
	for _, path := range []string{"prompt_cache_key", "metadata.user_id", "user"} {
		if v := gjson.GetBytes(body, path); v.Type == gjson.String && v.String() != "" {
			return path, v.String()
		}
	}
	return "", ""
}

// stablePrefix is what a conversation's turns share at their start, as
// the provider sees the prompt: the system prompt or instructions, the
// tools, and the first user turn. Later turns only append messages, so
// these stay the same while the conversation goes on; the first user
// turn tells apart conversations that share a system prompt. Each
// part is its raw JSON. Empty when the body has no conversation (an
// embedding, an image): such requests are spread as before. Only those
// parts are read out of the body, not the whole conversation.
func stablePrefix(body []byte) []string {
	first := firstTurn(body)
	if first == "" {
		return nil
	}
	parts := []string{first}
	for _, path := range []string{"system", "systemInstruction", "instructions", "tools"} {
		if v := gjson.GetBytes(body, path); v.Exists() {
			parts = append(parts, path, v.Raw)
		}
	}
	return parts
}

// firstTurn is the leading system/developer messages and the first other
// one of OpenAI chat messages, Anthropic messages, Gemini contents or the
// Responses API's input (or that input when it is a string).
func firstTurn(body []byte) string {
	for _, list := range []string{"messages", "contents", "input"} {
		var first strings.Builder
		for i := 0; i < 16; i++ {
			m := gjson.GetBytes(body, list+"."+strconv.Itoa(i))
			if !m.Exists() {
				break
			}
			first.WriteString(m.Raw)
			if role := m.Get("role").String(); role != "system" && role != "developer" {
				break
			}
		}
		if first.Len() > 0 {
			return first.String()
		}
		if v := gjson.GetBytes(body, list); v.Type == gjson.String {
			return v.Raw
		}
	}
	return ""
}

// conversation identifies the conversation call continues, for
// rotation.Request.Conversation (0: none, the key is picked at random).
// It is a hash of the client (its token, so one client's sessions never
// steer another's), the model (caches are per model) and the session the
// client names, else the conversation's stable prefix (of a JSON body).
func conversation(h http.Header, call upstreamCall, jsonBody bool) uint64 {
	source, value := explicitSession(h, call.body, jsonBody)
	parts := []string{source, value}
	if source == "" {
		if !jsonBody {
			return 0
		}
		if parts = stablePrefix(call.body); parts == nil {
			return 0
		}
	}
	f := fnv.New64a()
	f.Write([]byte(strconv.FormatInt(call.client.id(), 10) + "\x00" + call.prov.Name + "\x00" + call.model))
	for _, p := range parts {
		f.Write([]byte{0})
		f.Write([]byte(p))
	}
	if sum := f.Sum64(); sum != 0 {
		return sum
	}
	return 1
}
