package provider

import (
	"strconv"
	"strings"
	"unicode/utf8"
)

// Rejected is one piece of pasted key text that is not a usable key.
type Rejected struct {
	Line   int    // 1-based line of the pasted text
	Value  string // masked
	Reason string
}

// ParsedKeys is the result of ParseKeys.
type ParsedKeys struct {
	Keys       []string   // unique, in input order
	Duplicates []string   // repeated within the input (masked)
	Rejected   []Rejected // not keys of this provider
}

const (
	minKeyLen = 8
	maxKeyLen = 512
)

// ParseKeys splits pasted text into keys for p. Keys may be separated by
// newlines, commas, spaces, semicolons or tabs; surrounding whitespace and
// quotes are trimmed. Nothing is silently dropped: every token is a key, a
// duplicate or a rejected entry with its line and reason.
func (p Provider) ParseKeys(text string) ParsedKeys {
	var out ParsedKeys
	seen := map[string]bool{}
	for i, line := range strings.Split(strings.ReplaceAll(text, "\r\n", "\n"), "\n") {
		fields := strings.FieldsFunc(line, func(r rune) bool {
			return r == ',' || r == ';' || r == ' ' || r == '\t' || r == '\r' || r == '\u3000' || r == '，' || r == '；'
		})
		for _, f := range fields {
			k := strings.Trim(f, "\"'`")
			if k == "" {
				continue
			}
			if reason := p.checkKey(k); reason != "" {
				out.Rejected = append(out.Rejected, Rejected{Line: i + 1, Value: Mask(k), Reason: reason})
				continue
			}
			if seen[k] {
				out.Duplicates = append(out.Duplicates, Mask(k))
				continue
			}
			seen[k] = true
			out.Keys = append(out.Keys, k)
		}
	}
	return out
}

// checkKey says why k cannot be a key of p, or "" when it can.
func (p Provider) checkKey(k string) string {
	if len(k) < minKeyLen {
		return "too short to be a key (" + strconv.Itoa(len(k)) + " characters)"
	}
	if len(k) > maxKeyLen {
		return "too long to be a key (" + strconv.Itoa(len(k)) + " characters)"
	}
	for i := 0; i < len(k); i++ {
		if c := k[i]; c <= ' ' || c >= 0x7f {
			return "contains a character that cannot appear in a key"
		}
	}
	if len(p.KeyPrefixes) == 0 {
		return ""
	}
	for _, pre := range p.KeyPrefixes {
		if strings.HasPrefix(k, pre) {
			return ""
		}
	}
	return "not a " + p.Name + " key (expected it to start with " + strings.Join(p.KeyPrefixes, " or ") + ")"
}

// Mask shows enough of a secret to recognise it and never enough to use
// it: "sk-ab…7f3c". Short values are hidden whole.
func Mask(s string) string {
	r := []rune(s)
	if len(r) < 12 {
		return strings.Repeat("*", len(r))
	}
	return string(r[:5]) + "…" + string(r[len(r)-4:])
}

// MaskExcerpt cuts an upstream body to a short excerpt fit for the key's
// history, with the key's own secret masked wherever the provider echoed
// it, even cut short at the end of the body.
func MaskExcerpt(body []byte, secret string) string {
	const max = 300
	s := string(body)
	if secret != "" {
		s = strings.ReplaceAll(s, secret, Mask(secret))
		// A body read up to a limit may end in the first part of the secret.
		for i := len(secret) - 1; i >= 4; i-- {
			if strings.HasSuffix(s, secret[:i]) {
				s = s[:len(s)-i]
				break
			}
		}
	}
	if len(s) > max {
		s = s[:max]
		// Do not leave half a character at the cut.
		for i := 0; i < utf8.UTFMax && len(s) > 0; i++ {
			if r, size := utf8.DecodeLastRuneInString(s); r != utf8.RuneError || size != 1 {
				break
			}
			s = s[:len(s)-1]
		}
	}
	return s
}
