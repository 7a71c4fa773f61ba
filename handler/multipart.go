package handler

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
	if boundary == "" {
		return 0, 0, false
	}
	delim := []byte("--" + boundary)
	i := bytes.Index(body, delim)
	for i >= 0 {
		partStart := i + len(delim)
		if bytes.HasPrefix(body[partStart:], []byte("--")) {
			return 0, 0, false // closing delimiter
		}
		next := bytes.Index(body[partStart:], append([]byte("\r\n"), delim...))
		if next < 0 {
			return 0, 0, false
		}
		part := body[partStart : partStart+next]
		hdrEnd := bytes.Index(part, []byte("\r\n\r\n"))
		if hdrEnd >= 0 && fieldName(string(part[:hdrEnd])) == name {
			return partStart + hdrEnd + 4, partStart + next, true
		}
		i = partStart + next + 2
	}
	return 0, 0, false
}

// fieldName reads the form field name of a part's headers; "" for file
// parts and parts without one.
func fieldName(headers string) string {
	for _, line := range strings.Split(headers, "\r\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok || !strings.EqualFold(strings.TrimSpace(k), "Content-Disposition") {
			continue
		}
		disp, params, err := mime.ParseMediaType(strings.TrimSpace(v))
		if err != nil || disp != "form-data" {
			return ""
		}
		if _, isFile := params["filename"]; isFile {
			return ""
		}
		return params["name"]
	}
	return ""
}

// replaceRange returns body with body[start:end] replaced by s.
func replaceRange(body []byte, start, end int, s string) []byte {
	out := make([]byte, 0, len(body)-(end-start)+len(s))
	out = append(out, body[:start]...)
	out = append(out, s...)
	return append(out, body[end:]...)
}
