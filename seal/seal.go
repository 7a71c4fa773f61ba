// Package seal keeps keypool's secrets secret at rest: upstream keys are
// stored in D1 encrypted with AES-256-GCM, found again by an HMAC
// fingerprint (equal keys have equal fingerprints, so duplicates are
// caught without decrypting anything), and session cookies are signed.
// Every key is derived from one master secret (KEYPOOL_SECRET) with
// HKDF-SHA256, each for one purpose, so one never serves as another.
package seal

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"strings"
)

// prefix marks a sealed value, and its format version.
const prefix = "v1:"

// MinSecret is the shortest master secret accepted (in bytes).
const MinSecret = 16

// ErrNoSecret: KEYPOOL_SECRET is missing or too short.
var ErrNoSecret = errors.New("KEYPOOL_SECRET is not set or shorter than 16 characters: set it with `wrangler secret put KEYPOOL_SECRET` (locally in .dev.vars); it encrypts the upstream keys in D1")

// ErrOpen: a sealed value does not open with this master secret (tampered,
// or sealed under another secret).
var ErrOpen = errors.New("sealed value does not open with this KEYPOOL_SECRET")

// Box seals and opens secrets under one master secret.
type Box struct {
	aead    cipher.AEAD
	fpKey   []byte
	signKey []byte
}

// New derives a Box from the master secret.
func New(master string) (*Box, error) {
	if len(master) < MinSecret {
		return nil, ErrNoSecret
	}
	block, err := aes.NewCipher(derive(master, "keypool key encryption v1"))
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &Box{aead: aead, fpKey: derive(master, "keypool key fingerprint v1"),
		signKey: derive(master, "keypool session signing v1")}, nil
}

// derive is HKDF-SHA256 (RFC 5869) with an empty salt, for one 32-byte key.
func derive(master, info string) []byte {
	ext := hmac.New(sha256.New, make([]byte, sha256.Size))
	ext.Write([]byte(master))
	prk := ext.Sum(nil)
	exp := hmac.New(sha256.New, prk)
	exp.Write([]byte(info))
	exp.Write([]byte{1})
	return exp.Sum(nil)
}

// Seal encrypts plain; the result is text, fit for a D1 column. The
// additional data binds the value to its row's purpose (e.g. the
// provider), so a sealed key cannot be moved to another provider's row.
func (b *Box) Seal(plain, ad string) string {
	nonce := make([]byte, b.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		panic("seal: no randomness: " + err.Error())
	}
	out := b.aead.Seal(nonce, nonce, []byte(plain), []byte(ad))
	return prefix + base64.RawStdEncoding.EncodeToString(out)
}

// IsSealed reports whether v is a sealed value (not a legacy plain one).
func IsSealed(v string) bool { return strings.HasPrefix(v, prefix) }

// Open decrypts a value Seal made with the same additional data.
func (b *Box) Open(sealed, ad string) (string, error) {
	if !IsSealed(sealed) {
		return "", ErrOpen
	}
	raw, err := base64.RawStdEncoding.DecodeString(sealed[len(prefix):])
	n := b.aead.NonceSize()
	if err != nil || len(raw) < n+b.aead.Overhead() {
		return "", ErrOpen
	}
	plain, err := b.aead.Open(nil, raw[:n], raw[n:], []byte(ad))
	if err != nil {
		return "", ErrOpen
	}
	return string(plain), nil
}

// Fingerprint identifies plain without revealing it: equal inputs, equal
// fingerprints; without the master secret nobody can test a guess.
func (b *Box) Fingerprint(plain, ad string) string {
	m := hmac.New(sha256.New, b.fpKey)
	m.Write([]byte(ad))
	m.Write([]byte{0})
	m.Write([]byte(plain))
	return hex.EncodeToString(m.Sum(nil))
}

// Sign returns payload with a signature appended ("payload.signature");
// payload must not contain '.'.
func (b *Box) Sign(payload string) string {
	return payload + "." + b.mac(payload)
}

// Verify returns the payload of a value Sign made, checking its signature
// in constant time.
func (b *Box) Verify(signed string) (string, bool) {
	i := strings.LastIndexByte(signed, '.')
	if i < 0 {
		return "", false
	}
	payload, sig := signed[:i], signed[i+1:]
	if !hmac.Equal([]byte(sig), []byte(b.mac(payload))) {
		return "", false
	}
	return payload, true
}

func (b *Box) mac(payload string) string {
	m := hmac.New(sha256.New, b.signKey)
	m.Write([]byte(payload))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// HashToken is the stored form of a client token: SHA-256, hex. Tokens
// carry 128 bits or more of randomness, so a plain hash is enough and the
// lookup needs no secret.
func HashToken(token string) string {
	h := sha256.Sum256([]byte(token))
	return hex.EncodeToString(h[:])
}

// NewToken returns a new client token: "kp-" and 32 random base62-ish
// characters (190 bits).
func NewToken() string {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
	buf := make([]byte, 32)
	if _, err := rand.Read(buf); err != nil {
		panic("seal: no randomness: " + err.Error())
	}
	out := make([]byte, 0, 35)
	out = append(out, "kp-"...)
	for _, c := range buf {
		out = append(out, alphabet[int(c)%len(alphabet)])
	}
	return string(out)
}
