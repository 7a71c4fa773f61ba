package seal

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
)

const (
	master  = "master-secret-for-seal-tests-0001"
	master2 = "master-secret-for-seal-tests-0002"
)

func mustNew(t *testing.T, m string) *Box {
	t.Helper()
	b, err := New(m)
	if err != nil {
		t.Fatalf("New(%q): %v", m, err)
	}
	return b
}

func TestNewNeedsSecret(t *testing.T) {
	tests := []struct {
		name   string
		master string
		ok     bool
	}{
		{"empty", "", false},
		{"one byte", "x", false},
		{"15 bytes", strings.Repeat("a", MinSecret-1), false},
		{"16 bytes", strings.Repeat("a", MinSecret), true},
		{"long", strings.Repeat("secret", 40), true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b, err := New(tc.master)
			if tc.ok {
				if err != nil || b == nil {
					t.Fatalf("New: %v, %v; want a box", b, err)
				}
				return
			}
			if !errors.Is(err, ErrNoSecret) || b != nil {
				t.Fatalf("New = %v, %v; want nil, ErrNoSecret", b, err)
			}
		})
	}
}

func TestSealRoundTrip(t *testing.T) {
	b := mustNew(t, master)
	tests := []struct{ plain, ad string }{
		{"sk-proj-abcdefghijklmnopqrstuvwxyz0123456789", "openai"},
		{"", "openai"},
		{"AIzaSy" + strings.Repeat("Z", 33), "google-ai-studio"},
		{"key with spaces, é and ☃", ""},
		{strings.Repeat("long-", 2000), "groq"},
		{"\x00binary\xff", "x"},
	}
	for _, tc := range tests {
		sealed := b.Seal(tc.plain, tc.ad)
		if !IsSealed(sealed) || !strings.HasPrefix(sealed, "v1:") {
			t.Errorf("Seal(%.20q) = %.30q: not a sealed value", tc.plain, sealed)
		}
		if len(tc.plain) >= 8 && strings.Contains(sealed, tc.plain) {
			t.Errorf("Seal(%.20q) contains the plain text", tc.plain)
		}
		got, err := b.Open(sealed, tc.ad)
		if err != nil || got != tc.plain {
			t.Errorf("Open(Seal(%.20q)) = %.20q, %v", tc.plain, got, err)
		}
		// Another Box of the same master opens it too (keys are derived,
		// not random).
		if got, err := mustNew(t, master).Open(sealed, tc.ad); err != nil || got != tc.plain {
			t.Errorf("a second box of the same master: Open = %.20q, %v", got, err)
		}
	}
}

func TestSealDiffersEachTime(t *testing.T) {
	b := mustNew(t, master)
	seen := map[string]bool{}
	for i := 0; i < 100; i++ {
		s := b.Seal("sk-same-plain-text", "openai")
		if seen[s] {
			t.Fatalf("Seal gave the same value twice: %q", s)
		}
		seen[s] = true
	}
}

func TestOpenFails(t *testing.T) {
	b := mustNew(t, master)
	const plain, ad = "sk-proj-0123456789abcdef", "openai"
	sealed := b.Seal(plain, ad)
	raw, err := base64.RawStdEncoding.DecodeString(sealed[len("v1:"):])
	if err != nil {
		t.Fatal(err)
	}
	flip := func(i int) string {
		c := append([]byte(nil), raw...)
		c[i] ^= 0x01
		return "v1:" + base64.RawStdEncoding.EncodeToString(c)
	}
	tests := []struct {
		name   string
		box    *Box
		sealed string
		ad     string
	}{
		{"wrong master", mustNew(t, master2), sealed, ad},
		{"wrong ad", b, sealed, "groq"},
		{"empty ad", b, sealed, ""},
		{"flipped nonce byte", b, flip(0), ad},
		{"flipped ciphertext byte", b, flip(12), ad},
		{"flipped last (tag) byte", b, flip(len(raw) - 1), ad},
		{"truncated", b, sealed[:len(sealed)-4], ad},
		{"too short", b, "v1:" + base64.RawStdEncoding.EncodeToString(raw[:20]), ad},
		{"empty body", b, "v1:", ad},
		{"not base64", b, "v1:!!!!not-base64!!!!", ad},
		{"plain value", b, plain, ad},
		{"other version", b, "v2:" + sealed[3:], ad},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.box.Open(tc.sealed, tc.ad)
			if !errors.Is(err, ErrOpen) || got != "" {
				t.Errorf("Open = %q, %v; want \"\", ErrOpen", got, err)
			}
		})
	}
}

func TestIsSealed(t *testing.T) {
	tests := []struct {
		v    string
		want bool
	}{
		{mustNew(t, master).Seal("x", "y"), true},
		{"v1:", true},
		{"v1:abc", true},
		{"", false},
		{"sk-proj-abc", false},
		{"V1:abc", false},
		{"v2:abc", false},
		{" v1:abc", false},
	}
	for _, tc := range tests {
		if got := IsSealed(tc.v); got != tc.want {
			t.Errorf("IsSealed(%q) = %v, want %v", tc.v, got, tc.want)
		}
	}
}

func TestFingerprint(t *testing.T) {
	b, b2 := mustNew(t, master), mustNew(t, master2)
	fp := b.Fingerprint("sk-abc", "openai")
	if len(fp) != 64 {
		t.Errorf("fingerprint %q: want 64 hex characters", fp)
	}
	if _, err := hex.DecodeString(fp); err != nil {
		t.Errorf("fingerprint %q is not hex: %v", fp, err)
	}
	if again := mustNew(t, master).Fingerprint("sk-abc", "openai"); again != fp {
		t.Errorf("fingerprint not deterministic: %q then %q", fp, again)
	}
	if strings.Contains(fp, hex.EncodeToString([]byte("sk-abc"))) {
		t.Errorf("fingerprint contains the plain text")
	}
	plainHash := sha256.Sum256([]byte("sk-abc"))
	if fp == hex.EncodeToString(plainHash[:]) {
		t.Errorf("fingerprint is a bare hash: anyone could test a guess")
	}
	differ := []struct {
		name string
		got  string
	}{
		{"other master", b2.Fingerprint("sk-abc", "openai")},
		{"other ad", b.Fingerprint("sk-abc", "groq")},
		{"empty ad", b.Fingerprint("sk-abc", "")},
		{"other plain", b.Fingerprint("sk-abd", "openai")},
		// The separator keeps (ad, plain) pairs apart: "open"+"aisk-abc"
		// is "openai"+"sk-abc" without one.
		{"ad/plain boundary", b.Fingerprint("aisk-abc", "open")},
	}
	for _, tc := range differ {
		if tc.got == fp {
			t.Errorf("%s: same fingerprint %q", tc.name, fp)
		}
	}
}

// Each purpose has its own key, derived with HKDF-SHA256.
func TestDerivedKeys(t *testing.T) {
	// RFC 5869, test case 3 (empty salt and info): the first 32 bytes.
	ikm := string(bytes.Repeat([]byte{0x0b}, 22))
	if got := hex.EncodeToString(derive(ikm, "")); got != "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d" {
		t.Errorf("derive = %s, want RFC 5869's OKM", got)
	}
	b := mustNew(t, master)
	enc := derive(master, "keypool key encryption v1")
	keys := [][]byte{enc, b.fpKey, b.signKey, derive(master2, "keypool key encryption v1")}
	for i := range keys {
		if len(keys[i]) != 32 {
			t.Errorf("key %d: %d bytes", i, len(keys[i]))
		}
		for j := i + 1; j < len(keys); j++ {
			if bytes.Equal(keys[i], keys[j]) {
				t.Errorf("keys %d and %d are equal", i, j)
			}
		}
	}
	// The encryption key is the one derived for it.
	block, _ := aes.NewCipher(enc)
	aead, _ := cipher.NewGCM(block)
	sealed := b.Seal("sk-derived", "openai")
	raw, _ := base64.RawStdEncoding.DecodeString(sealed[3:])
	if plain, err := aead.Open(nil, raw[:12], raw[12:], []byte("openai")); err != nil || string(plain) != "sk-derived" {
		t.Errorf("the sealed value does not open with the derived key: %q, %v", plain, err)
	}
}

func TestSignVerify(t *testing.T) {
	b := mustNew(t, master)
	const payload = "a~1750000000~0123456789abcdef"
	signed := b.Sign(payload)
	if !strings.HasPrefix(signed, payload+".") {
		t.Fatalf("Sign = %q, want payload.signature", signed)
	}
	got, ok := b.Verify(signed)
	if !ok || got != payload {
		t.Fatalf("Verify(Sign) = %q, %v", got, ok)
	}
	if got, ok := mustNew(t, master).Verify(signed); !ok || got != payload {
		t.Errorf("a second box of the same master: Verify = %q, %v", got, ok)
	}
	if b.Sign(payload) != signed {
		t.Errorf("Sign is not deterministic")
	}
	sig := signed[len(payload)+1:]
	swapChar := func(s string, i int) string {
		c := []byte(s)
		if c[i] == 'A' {
			c[i] = 'B'
		} else {
			c[i] = 'A'
		}
		return string(c)
	}
	bad := []struct {
		name, v string
	}{
		{"payload changed", swapChar(payload, 0) + "." + sig},
		{"payload last char changed", swapChar(payload, len(payload)-1) + "." + sig},
		{"payload extended", payload + "0." + sig},
		{"signature changed (first)", payload + "." + swapChar(sig, 0)},
		{"signature changed (last)", payload + "." + swapChar(sig, len(sig)-1)},
		{"signature truncated", payload + "." + sig[:len(sig)-1]},
		{"signature empty", payload + "."},
		{"no signature", payload},
		{"empty", ""},
		{"other master", mustNew(t, master2).Sign(payload)},
		{"signature of another payload", payload + "." + b.Sign("other")[len("other")+1:]},
	}
	for _, tc := range bad {
		if got, ok := b.Verify(tc.v); ok || got != "" {
			t.Errorf("%s: Verify(%q) = %q, %v; want rejected", tc.name, tc.v, got, ok)
		}
	}
	// The signing key is not the fingerprint key.
	if sig == b.Fingerprint(payload, "") || strings.Contains(b.Fingerprint(payload, ""), sig) {
		t.Errorf("signature equals a fingerprint: keys are not separated")
	}
	// An empty payload signs and verifies too.
	if got, ok := b.Verify(b.Sign("")); !ok || got != "" {
		t.Errorf("empty payload: Verify = %q, %v", got, ok)
	}
}

func TestHashToken(t *testing.T) {
	tests := []struct{ token, want string }{
		{"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
		{"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
	}
	for _, tc := range tests {
		if got := HashToken(tc.token); got != tc.want {
			t.Errorf("HashToken(%q) = %q, want %q", tc.token, got, tc.want)
		}
	}
	tok := NewToken()
	h := HashToken(tok)
	if h != HashToken(tok) || len(h) != 64 || strings.Contains(h, tok[3:]) {
		t.Errorf("HashToken(%q) = %q", tok, h)
	}
	if HashToken(tok) == HashToken(tok+"x") {
		t.Errorf("different tokens hash alike")
	}
}

func TestNewToken(t *testing.T) {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
	seen := map[string]bool{}
	used := map[rune]bool{}
	for i := 0; i < 1000; i++ {
		tok := NewToken()
		if len(tok) != 35 || !strings.HasPrefix(tok, "kp-") {
			t.Fatalf("NewToken = %q: want kp- and 32 characters", tok)
		}
		for _, c := range tok[3:] {
			if !strings.ContainsRune(alphabet, c) {
				t.Fatalf("NewToken = %q: character %q not in the alphabet", tok, c)
			}
			used[c] = true
		}
		if seen[tok] {
			t.Fatalf("NewToken repeated %q", tok)
		}
		seen[tok] = true
	}
	// 32 000 draws use the whole alphabet (a constant or short-cycled
	// generator would not).
	if len(used) != len(alphabet) {
		t.Errorf("1000 tokens used %d of the %d characters", len(used), len(alphabet))
	}
}
