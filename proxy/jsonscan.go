package proxy

import (
	"bytes"
	"errors"
)

// forEachTopLevel calls fn with each key of the JSON object body (as
// written, without its quotes) and the byte range of its value, in one
// pass that decodes nothing: a request body may be many MB. Values are
// skipped by their structure (strings, brackets) only; the upstream
// validates them. It stops early when fn returns false. A body whose
// first byte (after white space) is not "{" is not an object: no keys,
// no error.
func forEachTopLevel(body []byte, fn func(key []byte, start, end int) bool) error {
	s := jsonScanner{b: body}
	s.b = bytes.TrimPrefix(s.b, []byte("\xef\xbb\xbf")) // a BOM, which some parsers skip
	off := len(body) - len(s.b)
	s.space()
	if s.i >= len(s.b) || s.b[s.i] != '{' {
		return nil
	}
	s.i++
	s.space()
	if s.peek() == '}' {
		s.i++
		return s.end()
	}
	for {
		s.space()
		ks, ke, err := s.str()
		if err != nil {
			return err
		}
		s.space()
		if s.peek() != ':' {
			return errors.New("a key without a value")
		}
		s.i++
		s.space()
		vs := s.i
		if err := s.value(); err != nil {
			return err
		}
		if !fn(s.b[ks+1:ke-1], off+vs, off+s.i) {
			return nil
		}
		s.space()
		switch s.peek() {
		case ',':
			s.i++
		case '}':
			s.i++
			return s.end()
		default:
			return errors.New("expected , or } after a value")
		}
	}
}

type jsonScanner struct {
	b []byte
	i int
}

func (s *jsonScanner) peek() byte {
	if s.i < len(s.b) {
		return s.b[s.i]
	}
	return 0
}

func (s *jsonScanner) space() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// end accepts only white space after the object: a second object would
// be read by some parsers and not by others.
func (s *jsonScanner) end() error {
	s.space()
	if s.i != len(s.b) {
		return errors.New("data after the object")
	}
	return nil
}

// str skips a string at s.i and returns its range, quotes included.
func (s *jsonScanner) str() (start, end int, err error) {
	if s.peek() != '"' {
		return 0, 0, errors.New("expected a string")
	}
	start = s.i
	i := s.i + 1
	for {
		j := bytes.IndexAny(s.b[i:], "\"\\")
		if j < 0 {
			return 0, 0, errors.New("an unterminated string")
		}
		i += j
		if s.b[i] == '\\' {
			i += 2
			if i > len(s.b) {
				return 0, 0, errors.New("an unterminated string")
			}
			continue
		}
		s.i = i + 1
		return start, s.i, nil
	}
}

// value skips one value: a string, an object or array (brackets matched,
// strings inside skipped whole), or a literal (number, true, false, null,
// or whatever a lenient parser takes, up to the next delimiter).
func (s *jsonScanner) value() error {
	switch s.peek() {
	case '"':
		_, _, err := s.str()
		return err
	case '{', '[':
		return s.nested()
	}
	start := s.i
	for s.i < len(s.b) && !delimiter(s.b[s.i]) {
		s.i++
	}
	if s.i == start {
		return errors.New("expected a value")
	}
	return nil
}

// nested skips an object or array, matching its brackets.
func (s *jsonScanner) nested() error {
	var open []byte
	for s.i < len(s.b) {
		switch c := s.b[s.i]; c {
		case '"':
			if _, _, err := s.str(); err != nil {
				return err
			}
			continue
		case '{', '[':
			open = append(open, c)
		case '}', ']':
			if len(open) == 0 || open[len(open)-1] != c-2 { // '{'+2 == '}', '['+2 == ']'
				return errors.New("mismatched brackets")
			}
			open = open[:len(open)-1]
			if len(open) == 0 {
				s.i++
				return nil
			}
		}
		s.i++
	}
	return errors.New("an unterminated object or array")
}

func delimiter(c byte) bool {
	switch c {
	case ',', '}', ']', ' ', '\t', '\r', '\n', ':', '{', '[', '"':
		return true
	}
	return false
}
