package rotation

// Prompt-cache affinity. Providers cache prompts per account (Anthropic per
// workspace, OpenAI per organization, Gemini per project, DeepSeek per
// account), so the turns of one conversation should reach the same key.
// keypool has no shared state between isolates to remember which key a
// conversation used, so every isolate computes it: rendezvous
// (highest-random-weight) hashing ranks the keys by a hash of the
// conversation and the key's id, and the conversation goes to the
// highest-ranked key it may use. While that key cools, the next one in the
// conversation's ranking serves; when it is back, the conversation
// returns to it. Over many conversations the first choices spread evenly
// across the keys, as a uniform hash does.

// PickAffine chooses, among the candidates not yet tried, the one that
// ranks highest for the conversation conv (see Rank). ok is false when
// none is left.
func PickAffine(cands []Candidate, tried map[int64]bool, conv uint64) (c Candidate, ok bool) {
	var best uint64
	for _, k := range cands {
		if tried[k.ID] {
			continue
		}
		if r := Rank(conv, k.ID); !ok || r > best || r == best && k.ID < c.ID {
			c, best, ok = k, r, true
		}
	}
	return c, ok
}

// Rank is key id's weight for conversation conv: a 64-bit mix of both
// (splitmix64's finalizer), the same in every isolate.
func Rank(conv uint64, id int64) uint64 {
	z := conv ^ (uint64(id) * 0x9e3779b97f4a7c15)
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}
