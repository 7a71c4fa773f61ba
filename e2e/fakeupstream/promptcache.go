package fakeupstream

import (
	"hash/fnv"
	"strconv"
	"strings"

	"github.com/tidwall/gjson"
)

// CacheModelPrefix marks chat models whose answers simulate a provider's
// prompt cache per key (as OpenAI's is per organization): each message of
// the prompt counts PromptTokensPerMessage tokens, and the tokens of the
// longest run of leading messages this key has been sent before (in any
// earlier request for the model) are reported as
// usage.prompt_tokens_details.cached_tokens.
const CacheModelPrefix = "cache-"

// PromptTokensPerMessage is what one message of a prompt counts.
const PromptTokensPerMessage = 100

// cachedChat answers a chat completion for a CacheModelPrefix model sent
// with key, remembering its prompt's prefixes for that key.
func (s *Server) cachedChat(key, model string, body []byte) string {
	msgs := gjson.GetBytes(body, "messages").Array()
	h := fnv.New64a()
	h.Write([]byte(model))
	s.mu.Lock()
	seen := s.prompts[key]
	if seen == nil {
		seen = map[uint64]bool{}
		s.prompts[key] = seen
	}
	cached := 0
	for i, m := range msgs {
		h.Write([]byte{0})
		h.Write([]byte(m.Raw))
		sum := h.Sum64()
		if seen[sum] && i < len(msgs)-1 {
			cached = i + 1
		}
		seen[sum] = true
	}
	s.mu.Unlock()
	prompt := len(msgs) * PromptTokensPerMessage
	return strings.Replace(ChatCompletion(model), `"usage":{"prompt_tokens":5,"completion_tokens":7,"total_tokens":12}`,
		`"usage":{"prompt_tokens":`+strconv.Itoa(prompt)+`,"completion_tokens":7,"total_tokens":`+strconv.Itoa(prompt+7)+
			`,"prompt_tokens_details":{"cached_tokens":`+strconv.Itoa(cached*PromptTokensPerMessage)+`}}`, 1)
}
