package provider

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func mustLookup(t testing.TB, name string) Provider {
	t.Helper()
	p, ok := Lookup(name)
	if !ok {
		t.Fatalf("provider %q not registered", name)
	}
	return p
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

const (
	k1 = "sk-aaaaaaaaaaaaaaaaaaaa1111"
	k2 = "sk-bbbbbbbbbbbbbbbbbbbb2222"
	k3 = "sk-cccccccccccccccccccc3333"
)

func TestParseKeysSeparators(t *testing.T) {
	tests := []struct {
		name string
		text string
		want []string
	}{
		{"single", k1, []string{k1}},
		{"newlines", k1 + "\n" + k2 + "\n" + k3 + "\n", []string{k1, k2, k3}},
		{"crlf", k1 + "\r\n" + k2 + "\r\n" + k3 + "\r\n", []string{k1, k2, k3}},
		{"bare cr", k1 + "\r" + k2, []string{k1, k2}},
		{"commas", k1 + "," + k2 + "," + k3, []string{k1, k2, k3}},
		{"comma space", k1 + ", " + k2 + " , " + k3, []string{k1, k2, k3}},
		{"spaces", k1 + " " + k2 + "   " + k3, []string{k1, k2, k3}},
		{"semicolons", k1 + ";" + k2 + ";" + k3 + ";", []string{k1, k2, k3}},
		{"tabs", k1 + "\t" + k2 + "\t\t" + k3, []string{k1, k2, k3}},
		{"fullwidth comma", k1 + "，" + k2 + "，" + k3, []string{k1, k2, k3}},
		{"fullwidth semicolon", k1 + "；" + k2, []string{k1, k2}},
		{"ideographic space", k1 + "\u3000" + k2, []string{k1, k2}},
		{"mixed", " " + k1 + ",\t" + k2 + "\r\n\r\n;" + k3 + " ;\n", []string{k1, k2, k3}},
		{"double quotes", `"` + k1 + `", "` + k2 + `"`, []string{k1, k2}},
		{"single quotes", `'` + k1 + `'`, []string{k1}},
		{"backticks", "`" + k1 + "`", []string{k1}},
		{"quote only on one side", `"` + k1, []string{k1}},
		{"blank text", "", nil},
		{"only separators", " \n\r\n,;\t，", nil},
		{"only quotes", `"" '' `, nil},
	}
	p := mustLookup(t, "openai")
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := p.ParseKeys(tt.text)
			if !equalStrings(got.Keys, tt.want) {
				t.Errorf("Keys = %q, want %q", got.Keys, tt.want)
			}
			if len(got.Duplicates) != 0 || len(got.Rejected) != 0 {
				t.Errorf("unexpected duplicates %q / rejected %+v", got.Duplicates, got.Rejected)
			}
		})
	}
}

func TestParseKeysDuplicates(t *testing.T) {
	p := mustLookup(t, "openai")
	text := k1 + "\n" + k2 + "\n" + k1 + "," + `"` + k2 + `"` + "\n" + k1 + "\n" + k3
	got := p.ParseKeys(text)
	if want := []string{k1, k2, k3}; !equalStrings(got.Keys, want) {
		t.Errorf("Keys = %q, want %q", got.Keys, want)
	}
	wantDup := []string{Mask(k1), Mask(k2), Mask(k1)}
	if !equalStrings(got.Duplicates, wantDup) {
		t.Errorf("Duplicates = %q, want %q", got.Duplicates, wantDup)
	}
	for _, d := range got.Duplicates {
		if strings.Contains(d, k1) || strings.Contains(d, k2) || strings.Contains(d, "aaaaaaaaaa") || strings.Contains(d, "bbbbbbbbbb") {
			t.Errorf("duplicate %q is not masked", d)
		}
	}
	if len(got.Rejected) != 0 {
		t.Errorf("Rejected = %+v, want none", got.Rejected)
	}
}

func TestParseKeysRejected(t *testing.T) {
	long := "sk-" + strings.Repeat("x", 600)
	tests := []struct {
		name     string
		provider string
		text     string
		keys     []string
		line     int
		value    string
		reason   string // substring of the reason
	}{
		{"too short", "openai", k1 + "\nsk-ab\n" + k2, []string{k1, k2}, 2, "*****", "too short"},
		{"too short crlf", "openai", k1 + "\r\n" + k2 + "\r\nsk-1", []string{k1, k2}, 3, "****", "too short"},
		{"too long", "openai", long, nil, 1, Mask(long), "too long"},
		{"non-ascii", "openai", k1 + "\n\n" + "sk-abcdéfghijklmnop", []string{k1}, 3, Mask("sk-abcdéfghijklmnop"), "character"},
		{"control char", "openai", "sk-abc\x01defghijklmno", nil, 1, Mask("sk-abc\x01defghijklmno"), "character"},
		{"del char", "mistral", "abcdefgh\x7fijklmno", nil, 1, Mask("abcdefgh\x7fijklmno"), "character"},
		{"nbsp inside", "mistral", "abcdefgh\u00a0ijklmno", nil, 1, Mask("abcdefgh\u00a0ijklmno"), "character"},
		{"gemini key under openai", "openai", k1 + "\n" + k2 + "\nAIzaSyA1234567890abcdefghijklmnopqrstu", []string{k1, k2}, 3, "AIzaS…rstu", "expected it to start with sk-"},
		{"openai key under google", "google-ai-studio", "AIzaSyA1234567890abcdefghijklmnopqrstu\n" + k1, []string{"AIzaSyA1234567890abcdefghijklmnopqrstu"}, 2, Mask(k1), "expected it to start with AIza"},
		{"openai key under anthropic", "anthropic", k1, nil, 1, "sk-aa…1111", "expected it to start with sk-ant-"},
		{"junk word among keys", "openai", k1 + ", hello-world-123, " + k2, []string{k1, k2}, 1, Mask("hello-world-123"), "expected it to start with sk-"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := mustLookup(t, tt.provider)
			got := p.ParseKeys(tt.text)
			if !equalStrings(got.Keys, tt.keys) {
				t.Errorf("Keys = %q, want %q", got.Keys, tt.keys)
			}
			if len(got.Rejected) != 1 {
				t.Fatalf("Rejected = %+v, want exactly one", got.Rejected)
			}
			r := got.Rejected[0]
			if r.Line != tt.line {
				t.Errorf("Line = %d, want %d", r.Line, tt.line)
			}
			if r.Value != tt.value {
				t.Errorf("Value = %q, want %q", r.Value, tt.value)
			}
			if !strings.Contains(r.Reason, tt.reason) {
				t.Errorf("Reason = %q, want it to mention %q", r.Reason, tt.reason)
			}
		})
	}
}

func TestParseKeysManyRejectedLines(t *testing.T) {
	p := mustLookup(t, "groq")
	good := "gsk_0123456789abcdefghijkl"
	text := strings.Join([]string{
		good,              // 1
		"",                // 2
		"short",           // 3
		"sk-0123456789ab", // 4: wrong prefix
		good,              // 5: duplicate
		"gsk_ok_but_é_no", // 6: non-ASCII
	}, "\r\n")
	got := p.ParseKeys(text)
	if !equalStrings(got.Keys, []string{good}) {
		t.Errorf("Keys = %q", got.Keys)
	}
	if !equalStrings(got.Duplicates, []string{Mask(good)}) {
		t.Errorf("Duplicates = %q", got.Duplicates)
	}
	wantLines := []int{3, 4, 6}
	if len(got.Rejected) != len(wantLines) {
		t.Fatalf("Rejected = %+v, want lines %v", got.Rejected, wantLines)
	}
	for i, r := range got.Rejected {
		if r.Line != wantLines[i] {
			t.Errorf("Rejected[%d].Line = %d, want %d", i, r.Line, wantLines[i])
		}
		if r.Reason == "" {
			t.Errorf("Rejected[%d] has no reason", i)
		}
	}
}

func TestParseKeysNoPrefixProvider(t *testing.T) {
	p := mustLookup(t, "mistral")
	if len(p.KeyPrefixes) != 0 {
		t.Fatalf("mistral has KeyPrefixes %q; this test expects none", p.KeyPrefixes)
	}
	text := "abcdEFGH1234ijkl\nsk-whatever-1234\nAIzaSyAnything00\n8chars!!\nshort"
	got := p.ParseKeys(text)
	want := []string{"abcdEFGH1234ijkl", "sk-whatever-1234", "AIzaSyAnything00", "8chars!!"}
	if !equalStrings(got.Keys, want) {
		t.Errorf("Keys = %q, want %q", got.Keys, want)
	}
	if len(got.Rejected) != 1 || got.Rejected[0].Line != 5 || !strings.Contains(got.Rejected[0].Reason, "too short") {
		t.Errorf("Rejected = %+v, want one too-short entry on line 5", got.Rejected)
	}
}

func TestParseKeysLengthBounds(t *testing.T) {
	p := mustLookup(t, "mistral")
	tests := []struct {
		n  int
		ok bool
	}{{7, false}, {8, true}, {512, true}, {513, false}}
	for _, tt := range tests {
		k := strings.Repeat("k", tt.n)
		got := p.ParseKeys(k)
		if ok := len(got.Keys) == 1 && got.Keys[0] == k; ok != tt.ok {
			t.Errorf("length %d: accepted = %v, want %v (rejected %+v)", tt.n, ok, tt.ok, got.Rejected)
		}
		if !tt.ok && len(got.Rejected) != 1 {
			t.Errorf("length %d: Rejected = %+v, want one", tt.n, got.Rejected)
		}
	}
}

func TestMask(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", ""},
		{"a", "*"},
		{"sk-ab", "*****"},
		{"abcdefghijk", "***********"}, // 11: hidden whole
		{"abcdefghijkl", "abcde…ijkl"}, // 12: 5 + 4 shown
		{"sk-proj-0123456789abcdef7f3c", "sk-pr…7f3c"},
		{"ééééééééééé", "***********"}, // counts characters, not bytes
		{"éééééabcdefghij", "ééééé…ghij"},
	}
	for _, tt := range tests {
		if got := Mask(tt.in); got != tt.want {
			t.Errorf("Mask(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// checkMask asserts that m is a valid masking of s: short values fully hidden,
// longer ones showing at most 5 leading and 4 trailing characters.
func checkMask(t *testing.T, s, m string) {
	t.Helper()
	r := []rune(s)
	if len(r) < 12 {
		if m != strings.Repeat("*", len(r)) {
			t.Errorf("Mask(%q) = %q, want it hidden whole", s, m)
		}
		return
	}
	head, tail, ok := strings.Cut(m, "…")
	if !ok || utf8.RuneCountInString(head) > 5 || utf8.RuneCountInString(tail) > 4 {
		t.Errorf("Mask(%q) = %q reveals too much", s, m)
		return
	}
	if head != string(r[:5]) || tail != string(r[len(r)-4:]) {
		t.Errorf("Mask(%q) = %q does not keep the ends", s, m)
	}
}

func TestMaskNeverRevealsMore(t *testing.T) {
	for n := 0; n < 40; n++ {
		s := strings.Repeat("x", n/2) + strings.Repeat("é", n-n/2)
		checkMask(t, s, Mask(s))
		s = "sk-" + strings.Repeat("0123456789", 4)[:n]
		checkMask(t, s, Mask(s))
	}
}

// isSep mirrors the separators ParseKeys documents: newlines, carriage
// returns, commas, spaces, semicolons, tabs, and their fullwidth forms.
func isSep(r rune) bool {
	switch r {
	case '\n', '\r', ',', ';', ' ', '\t', '\u3000', '，', '；':
		return true
	}
	return false
}

// countTokens counts the non-empty tokens (after quote trimming) in text.
func countTokens(text string) int {
	n := 0
	var cur strings.Builder
	flush := func() {
		if strings.Trim(cur.String(), "\"'`") != "" {
			n++
		}
		cur.Reset()
	}
	for _, r := range text {
		if isSep(r) {
			flush()
			continue
		}
		cur.WriteRune(r)
	}
	flush()
	return n
}

func FuzzParseKeys(f *testing.F) {
	seeds := []string{
		"",
		k1,
		k1 + "\n" + k2 + "\r\n" + k1,
		k1 + "," + k2 + ";" + k3 + "\t" + k1 + " x",
		`"` + k1 + `"，'` + k2 + "'；" + k3,
		"AIzaSyA1234567890abcdefghijklmnopqrstu\nsk-ab\n\xff\xfe\xfd garbage",
		"\r\r\n\n\u3000 sk-" + strings.Repeat("z", 600),
		"``\"\"''",
	}
	for _, s := range seeds {
		for _, prov := range []string{"openai", "mistral", "google-ai-studio"} {
			f.Add(prov, s)
		}
	}
	f.Fuzz(func(t *testing.T, prov, text string) {
		p, ok := Lookup(prov)
		if !ok {
			p, _ = Lookup("openai")
		}
		got := p.ParseKeys(text)
		total := len(got.Keys) + len(got.Duplicates) + len(got.Rejected)
		if want := countTokens(text); total != want {
			t.Fatalf("%d keys + %d duplicates + %d rejected = %d, want %d tokens\n%+v",
				len(got.Keys), len(got.Duplicates), len(got.Rejected), total, want, got)
		}
		lines := strings.Count(strings.ReplaceAll(text, "\r\n", "\n"), "\n") + 1
		seen := map[string]bool{}
		for _, k := range got.Keys {
			if strings.ContainsFunc(k, isSep) {
				t.Fatalf("key %q contains a separator", k)
			}
			if seen[k] {
				t.Fatalf("key %q returned twice", k)
			}
			seen[k] = true
			if len(k) < 8 || len(k) > 512 {
				t.Fatalf("key %q has length %d", k, len(k))
			}
			for i := 0; i < len(k); i++ {
				if k[i] <= ' ' || k[i] >= 0x7f {
					t.Fatalf("key %q contains byte %#x", k, k[i])
				}
			}
			if strings.Trim(k, "\"'`") != k {
				t.Fatalf("key %q keeps surrounding quotes", k)
			}
			if !strings.Contains(text, k) {
				t.Fatalf("key %q is not in the input", k)
			}
			if len(p.KeyPrefixes) > 0 && p.checkKey(k) != "" {
				t.Fatalf("key %q does not fit provider %s", k, p.Name)
			}
		}
		for _, d := range got.Duplicates {
			if utf8.RuneCountInString(strings.ReplaceAll(strings.ReplaceAll(d, "*", ""), "…", "")) > 9 {
				t.Fatalf("duplicate %q reveals more than 9 characters", d)
			}
		}
		for _, r := range got.Rejected {
			if r.Line < 1 || r.Line > lines {
				t.Fatalf("rejected line %d outside 1..%d", r.Line, lines)
			}
			if r.Reason == "" {
				t.Fatalf("rejected %+v without a reason", r)
			}
			if utf8.RuneCountInString(strings.ReplaceAll(strings.ReplaceAll(r.Value, "*", ""), "…", "")) > 9 {
				t.Fatalf("rejected value %q reveals more than 9 characters", r.Value)
			}
		}
	})
}

// longestLeak is the longest run of secret (longer than what Mask shows)
// that appears in s.
func longestLeak(s, secret string) string {
	best := ""
	for i := 0; i < len(secret); i++ {
		for j := i + len(best) + 1; j <= len(secret); j++ {
			if !strings.Contains(s, secret[i:j]) {
				break
			}
			best = secret[i:j]
		}
	}
	return best
}

func TestMaskExcerpt(t *testing.T) {
	secret := "sk-proj-ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcdef"
	masked := Mask(secret)
	anthropic := "sk-ant-api03-" + strings.Repeat("AbCdEfGhIjKlMnOpQrStUvWxYz", 4)[:95]
	filler := func(n int) string { return strings.Repeat(".", n) }
	tests := []struct {
		name   string
		body   string
		secret string
		want   string // exact result, when set
	}{
		{"short, no secret", `{"error":"bad"}`, secret, `{"error":"bad"}`},
		{"short, secret", `{"error":"invalid key ` + secret + `"}`, secret, `{"error":"invalid key ` + masked + `"}`},
		{"secret twice", secret + " " + secret, secret, masked + " " + masked},
		{"no secret given", filler(400), "", filler(300)},
		{"empty body", "", secret, ""},
		{"long body, secret first", secret + filler(5000), secret, masked + filler(300-len(masked))},
		{"long body, secret at 280", filler(280) + secret + filler(5000), secret, filler(280) + masked + filler(8)},
		{"long body, secret across 300", filler(295) + secret + filler(100), secret, filler(295) + masked[:5]},
		{"long body, secret at the 1200 cut", filler(1190) + secret + filler(100), secret, filler(300)},
		{"secret echoed many times", strings.Repeat(secret+" ", 60), secret, ""},
		// Masking shrinks each echo of a long (Anthropic-sized) key from 108
		// to 12 bytes, which pulls the copy cut in half at the 1200-byte
		// pre-cut inside the first 300 bytes.
		{"long secret echoed, cut at 1200", filler(50) + strings.Repeat(anthropic, 20), anthropic, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := MaskExcerpt([]byte(tt.body), tt.secret)
			if len(got) > 300 {
				t.Errorf("len = %d, want ≤ 300", len(got))
			}
			if tt.secret != "" {
				// Mask shows 5 + 4 characters; no longer run of the secret may appear.
				if leak := longestLeak(got, tt.secret); len(leak) > 5 {
					t.Errorf("excerpt reveals %d characters of the secret: %q\nexcerpt: %q", len(leak), leak, got)
				}
			}
			if tt.want != "" && got != tt.want {
				t.Errorf("got  %q\nwant %q", got, tt.want)
			}
			if tt.want == "" && tt.body != "" && got == "" {
				t.Errorf("empty excerpt for a non-empty body")
			}
		})
	}
}
