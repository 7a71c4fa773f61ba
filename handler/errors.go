package handler

import (
	"log"
	"net/http"
	"strconv"

	"github.com/keypool/keypool/jsonout"
)

// apiError is an answer in the OpenAI error format,
// {"error":{"message","type","param","code"}}, which every OpenAI SDK
// understands. Admin routes use it too, with param naming the wrong field.
type apiError struct {
	Status  int
	Message string
	Type    string // invalid_request_error, authentication_error, …
	Code    string
	Param   string
	// RetryAfter, when positive, is sent as a Retry-After header (seconds).
	RetryAfter int64
}

func (e apiError) write(w http.ResponseWriter) {
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
	writeJSON(w, e.Status, b.Bytes())
}

func writeJSON(w http.ResponseWriter, status int, body []byte) {
	h := w.Header()
	h.Set("Content-Type", "application/json; charset=utf-8")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	w.Write(body)
}

func badRequest(msg, param string) apiError {
	return apiError{Status: http.StatusBadRequest, Message: msg, Type: "invalid_request_error", Code: "invalid_request", Param: param}
}

func notFound(msg string) apiError {
	return apiError{Status: http.StatusNotFound, Message: msg, Type: "invalid_request_error", Code: "not_found"}
}

func internalError(msg string) apiError {
	return apiError{Status: http.StatusInternalServerError, Message: msg, Type: "server_error", Code: "internal_error"}
}

// failed answers 500 with message after logging err with what keypool
// was doing (format and args). err comes from the store or the seal and
// never holds a secret; message is what the client may know.
func failed(w http.ResponseWriter, err error, message, format string, args ...any) {
	log.Printf("keypool: "+format+": %v", append(args, err)...)
	internalError(message).write(w)
}
