package proxy

import (
	"bytes"
	"mime"
	"strings"
)

// multipartBoundary returns the boundary of a multipart/form-data body, or
// "" when the content type is something else.
func multipartBoundary(contentType string) string {
	mt, params, err := mime.ParseMediaType(contentType)
	if err != nil || mt != "multipart/form-data" {
		return ""
	}
	return params["boundary"]
}

// multipartField finds the value of the plain form field name (not a file)
// in a multipart body: body[start:end]. Only the field is located, the
// body is not copied or re-encoded, so that a retry or a rewrite keeps
// every other byte (the audio file above all) exactly as the client sent
// it.
func multipartField(body []byte, boundary, name string) (start, end int, ok bool) {
	forEachPart(body, boundary, func(n string, file bool, s, e int) bool {
		if n == name && !file {
			start, end, ok = s, e, true
		}
		return !ok
	})
	return start, end, ok
}

// forEachPart calls fn with each part's form field name, whether it is a
// file, and the range of its content, until fn returns false.
func forEachPart(body []byte, boundary string, fn func(name string, file bool, start, end int) bool) {
	if boundary == "" {
		return
	}
	delim := []byte("--" + boundary)
	i := bytes.Index(body, delim)
	for i >= 0 {
		partStart := i + len(delim)
		if bytes.HasPrefix(body[partStart:], []byte("--")) {
			return // closing delimiter
		}
		next := bytes.Index(body[partStart:], append([]byte("\r\n"), delim...))
		if next < 0 {
			return
		}
		part := body[partStart : partStart+next]
		if hdrEnd := bytes.Index(part, []byte("\r\n\r\n")); hdrEnd >= 0 {
			name, file := partName(string(part[:hdrEnd]))
			if name != "" && !fn(name, file, partStart+hdrEnd+4, partStart+next) {
				return
			}
		}
		i = partStart + next + 2
	}
}

// unreadablePart names a part whose Content-Disposition does not parse
// but mentions a model.
const unreadablePart = "\x00unreadable"

// partName reads the form field name of a part's headers and whether
// the part is a file; "" for parts without one.
func partName(headers string) (name string, file bool) {
	for _, line := range strings.Split(headers, "\r\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok || !strings.EqualFold(strings.TrimSpace(k), "Content-Disposition") {
			continue
		}
		disp, params, err := mime.ParseMediaType(strings.TrimSpace(v))
		if err != nil && strings.Contains(strings.ToLower(v), "model") {
			// Some parsers may still read it as the model.
			return unreadablePart, false
		}
		if err != nil || disp != "form-data" {
			return "", false
		}
		_, isFile := params["filename"]
		return params["name"], isFile
	}
	return "", false
}

// replaceRange returns body with body[start:end] replaced by s.
func replaceRange(body []byte, start, end int, s string) []byte {
	out := make([]byte, 0, len(body)-(end-start)+len(s))
	out = append(out, body[:start]...)
	out = append(out, s...)
	return append(out, body[end:]...)
}
