// Package jsonout writes JSON without reflection, which keeps the worker
// small and fast under TinyGo (whose encoding/json is heavy). Reading JSON
// is gjson's job.
package jsonout

import (
	"math"
	"strconv"
	"unicode/utf8"
)

// Builder appends JSON values to a buffer and places the commas itself.
// Calls must form valid JSON (a Key before each object member's value);
// Builder does not check that.
type Builder struct {
	buf   []byte
	comma bool // a value was just completed: the next one needs a comma
}

// Bytes returns the JSON written so far.
func (b *Builder) Bytes() []byte { return b.buf }

func (b *Builder) sep() {
	if b.comma {
		b.buf = append(b.buf, ',')
	}
}

func (b *Builder) open(c byte) *Builder {
	b.sep()
	b.buf = append(b.buf, c)
	b.comma = false
	return b
}

func (b *Builder) close(c byte) *Builder {
	b.buf = append(b.buf, c)
	b.comma = true
	return b
}

func (b *Builder) Object() *Builder    { return b.open('{') }
func (b *Builder) EndObject() *Builder { return b.close('}') }
func (b *Builder) Array() *Builder     { return b.open('[') }
func (b *Builder) EndArray() *Builder  { return b.close(']') }

// Key writes an object member's name; its value must follow.
func (b *Builder) Key(k string) *Builder {
	b.sep()
	b.buf = AppendString(b.buf, k)
	b.buf = append(b.buf, ':')
	b.comma = false
	return b
}

func (b *Builder) String(s string) *Builder {
	b.sep()
	b.buf = AppendString(b.buf, s)
	b.comma = true
	return b
}

func (b *Builder) Int(n int64) *Builder {
	b.sep()
	b.buf = strconv.AppendInt(b.buf, n, 10)
	b.comma = true
	return b
}

// Float writes f; NaN and infinities, which JSON cannot express, become null.
func (b *Builder) Float(f float64) *Builder {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return b.Null()
	}
	b.sep()
	b.buf = strconv.AppendFloat(b.buf, f, 'f', -1, 64)
	b.comma = true
	return b
}

func (b *Builder) Bool(v bool) *Builder {
	b.sep()
	b.buf = strconv.AppendBool(b.buf, v)
	b.comma = true
	return b
}

func (b *Builder) Null() *Builder {
	b.sep()
	b.buf = append(b.buf, "null"...)
	b.comma = true
	return b
}

// Raw writes already-encoded JSON as one value.
func (b *Builder) Raw(js []byte) *Builder {
	b.sep()
	b.buf = append(b.buf, js...)
	b.comma = true
	return b
}

const hex = "0123456789abcdef"

// AppendString appends s as a JSON string. Invalid UTF-8 becomes U+FFFD;
// '<', '>' and '&' are escaped so the output is safe inside HTML too.
func AppendString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				dst = append(dst, '\\', c)
			case c == '\n':
				dst = append(dst, '\\', 'n')
			case c == '\r':
				dst = append(dst, '\\', 'r')
			case c == '\t':
				dst = append(dst, '\\', 't')
			case c < 0x20 || c == '<' || c == '>' || c == '&':
				dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			default:
				dst = append(dst, c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			dst = append(dst, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			dst = append(dst, '\\', 'u', '2', '0', '2', hex[r&0xf])
		default:
			dst = append(dst, s[i:i+size]...)
		}
		i += size
	}
	return append(dst, '"')
}

// StringArray encodes a list of strings as a JSON array.
func StringArray(ss []string) []byte {
	var b Builder
	b.Array()
	for _, s := range ss {
		b.String(s)
	}
	b.EndArray()
	return b.Bytes()
}

// IntArray encodes a list of integers as a JSON array.
func IntArray(ns []int64) []byte {
	var b Builder
	b.Array()
	for _, n := range ns {
		b.Int(n)
	}
	b.EndArray()
	return b.Bytes()
}
