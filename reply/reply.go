// Package reply is what keypool answers with on every route: JSON bodies
// and errors in the OpenAI error format ({"error":{"message","type",
// "param","code"}}), which every OpenAI SDK understands. One writer for
// every error keeps the format, the status and the headers the same
// whoever answers.
package reply

import (
	"log"
	"net/http"
	"strconv"

	"github.com/keypool/keypool/jsonout"
	"github.com/keypool/keypool/store"
)

// Error is an answer in the OpenAI error format,
// {"error":{"message","type","param","code"}}, which every OpenAI SDK
// understands. Admin routes use it too, with param naming the wrong field.
type Error struct {
	Status  int
	Message string
	Type    string // invalid_request_error, authentication_error, …
	Code    string
	Param   string
	// RetryAfter, when positive, is sent as a Retry-After header (seconds).
	RetryAfter int64
}

// Write sends the error.
func (e Error) Write(w http.ResponseWriter) {
	var b jsonout.Builder
	b.Object().Key("error").Object().
		Key("message").String(e.Message).
		Key("type").String(e.Type)
	if e.Param != "" {
		b.Key("param").String(e.Param)
	} else {
		b.Key("param").Null()
	}
	b.Key("code").String(e.Code).EndObject().EndObject()
	if e.RetryAfter > 0 {
		w.Header().Set("Retry-After", strconv.FormatInt(e.RetryAfter, 10))
	}
	JSON(w, e.Status, b.Bytes())
}

// JSON sends body, JSON, with status, never cached.
func JSON(w http.ResponseWriter, status int, body []byte) {
	h := w.Header()
	h.Set("Content-Type", "application/json; charset=utf-8")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	w.Write(body)
}

// BadRequest is a 400 naming the wrong field in param.
func BadRequest(msg, param string) Error {
	return Error{Status: http.StatusBadRequest, Message: msg, Type: "invalid_request_error", Code: "invalid_request", Param: param}
}

// NotFound is a 404.
func NotFound(msg string) Error {
	return Error{Status: http.StatusNotFound, Message: msg, Type: "invalid_request_error", Code: "not_found"}
}

// Internal is a 500.
func Internal(msg string) Error {
	return Error{Status: http.StatusInternalServerError, Message: msg, Type: "server_error", Code: "internal_error"}
}

// Failed answers 500 with message after logging err with what keypool
// was doing (format and args), or 503 StoreUnavailable when err says D1
// itself failed. err comes from the store or the seal and never holds a
// secret; message is what the client may know.
func Failed(w http.ResponseWriter, err error, message, format string, args ...any) {
	log.Printf("keypool: "+format+": %v", append(args, err)...)
	if store.Unavailable(err) {
		StoreUnavailable().Write(w)
		return
	}
	Internal(message).Write(w)
}

// StoreUnavailable is the 503 for a request that needs D1 while it does
// not answer (store.Unavailable).
func StoreUnavailable() Error {
	return Error{Status: http.StatusServiceUnavailable, Type: "server_error", Code: "store_unavailable", RetryAfter: 5,
		Message: "keypool's database (D1) is not answering; this request needs it and was not completed; try again shortly"}
}

// MethodNotAllowed is a 405 naming the methods allowed.
func MethodNotAllowed(w http.ResponseWriter, allow string) {
	w.Header().Set("Allow", allow)
	Error{Status: http.StatusMethodNotAllowed, Type: "invalid_request_error", Code: "method_not_allowed",
		Message: "method not allowed; use " + allow}.Write(w)
}

// NoSecret is the 503 for a route that needs KEYPOOL_SECRET (err says
// why there is none).
func NoSecret(w http.ResponseWriter, err error) {
	Error{Status: http.StatusServiceUnavailable, Type: "server_error", Code: "not_configured",
		Message: "keypool will not serve keys without KEYPOOL_SECRET: " + err.Error()}.Write(w)
}

// Recorder is a ResponseWriter that remembers the status it answered,
// for what is written about the answer afterwards (the audit log, the
// request log). Unwrap lets the runtime find the writer underneath.
type Recorder struct {
	http.ResponseWriter
	code int
}

// NewRecorder wraps w.
func NewRecorder(w http.ResponseWriter) Recorder { return Recorder{ResponseWriter: w} }

func (s *Recorder) WriteHeader(code int) {
	if s.code == 0 {
		s.code = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *Recorder) Write(b []byte) (int, error) {
	if s.code == 0 {
		s.code = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

// Unwrap is the writer underneath.
func (s *Recorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// Status is the status answered (200 when only a body was written; 0
// when nothing was).
func (s *Recorder) Status() int { return s.code }
