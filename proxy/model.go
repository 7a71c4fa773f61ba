package proxy

import (
	"bytes"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/tidwall/gjson"

	"github.com/keypool/keypool/jsonout"
	"github.com/keypool/keypool/provider"
	"github.com/keypool/keypool/reply"
	"github.com/keypool/keypool/usage"
)

// The model a request names decides its token's scope and the key state
// it touches, so keypool reads it exactly where the provider will, and
// refuses a request whose model is ambiguous or unreasonable rather than
// guess. Parsers disagree on a repeated field (gjson takes the first;
// Python, JavaScript and Go take the last), so a repeat is refused.

// maxModelBytes bounds a model name: every real one is far shorter, and
// the name becomes part of cache keys, usage rows and log lines.
const maxModelBytes = 256

// bodyField is a model field found at the top level of a request body.
type bodyField struct {
	value      string
	found      bool
	start, end int  // the value's bytes in the body: a JSON string with its quotes, or a form part's content
	json       bool // start:end is a JSON string
}

// rewrite returns body with the field's value replaced by s; every other
// byte is kept.
func (f bodyField) rewrite(body []byte, s string) []byte {
	if !f.json {
		return replaceRange(body, f.start, f.end, s)
	}
	return replaceRange(body, f.start, f.end, string(jsonout.AppendString(nil, s)))
}

// bodyModels is what a body says about its model: "model" (OpenAI
// and most others) and "model_id" (ElevenLabs).
type bodyModels struct {
	model, modelID bodyField
}

// readBodyModels finds the model fields of a JSON or multipart body,
// refusing (400, naming the field) a repeated one, an unusual spelling,
// a value that is not a string and a model over maxModelBytes.
func readBodyModels(contentType string, body []byte) (bodyModels, reply.Error) {
	var m bodyModels
	var bad reply.Error
	switch boundary := multipartBoundary(contentType); {
	case len(body) == 0:
	case boundary != "":
		m, bad = multipartModels(body, boundary)
	case isJSON(contentType):
		m, bad = jsonModels(body)
	}
	if bad.Status == 0 {
		bad = checkModelName("model", m.model.value)
	}
	if bad.Status == 0 {
		bad = checkModelName("model_id", m.modelID.value)
	}
	return m, bad
}

// field is the model field a key names (see modelFieldOf), nil for none.
func (m *bodyModels) field(key string) (name string, f *bodyField, unusual bool) {
	name, unusual = modelFieldOf(key)
	switch name {
	case "model":
		f = &m.model
	case "model_id":
		f = &m.modelID
	}
	return name, f, unusual
}

// modelFieldOf says which model field a key names: "model" or
// "model_id" as written, canonical; "" for other keys. A key that only
// JSON decoding or case folding (Go's encoding/json) turns into one of
// them is refused: an upstream may read it as the model.
func modelFieldOf(key string) (name string, unusual bool) {
	for _, n := range []string{"model", "model_id"} {
		if key == n {
			return n, false
		}
		if strings.EqualFold(key, n) || strings.Contains(key, `\`) && strings.EqualFold(gjson.Parse(`"`+key+`"`).String(), n) {
			return n, true
		}
	}
	return "", false
}

// jsonModels reads the top-level model fields of a JSON object in one
// pass, without decoding the rest. A body that is not an object names no
// model (the upstream judges it); a broken object is refused.
func jsonModels(body []byte) (bodyModels, reply.Error) {
	var m bodyModels
	var bad reply.Error
	err := forEachTopLevel(body, func(key []byte, vs, ve int) bool {
		name, f, unusual := m.field(string(key))
		switch {
		case f == nil:
		case unusual:
			bad = reply.BadRequest("the body spells the field "+name+" unusually (escaped or in other letter case); write it as \""+name+"\"", name)
		case f.found:
			bad = reply.BadRequest("the body names "+name+" twice; name it once", name)
		case body[vs] != '"':
			bad = reply.BadRequest(name+" must be a string", name)
		default:
			*f = bodyField{value: gjson.ParseBytes(body[vs:ve]).String(), found: true, start: vs, end: ve, json: true}
		}
		return bad.Status == 0
	})
	if err != nil && bad.Status == 0 {
		// Refused rather than passed on: a parser that reads it otherwise
		// might find another model in it.
		bad = reply.BadRequest("the request body is not valid JSON ("+err.Error()+")", "")
	}
	return m, bad
}

// multipartModels reads the model fields of a multipart form. A field
// given twice, or given as a file, is refused.
func multipartModels(body []byte, boundary string) (bodyModels, reply.Error) {
	var m bodyModels
	var bad reply.Error
	forEachPart(body, boundary, func(name string, file bool, start, end int) bool {
		if name == unreadablePart {
			bad = reply.BadRequest("a form part that mentions a model has a Content-Disposition header keypool cannot read", "model")
			return false
		}
		field, f, unusual := m.field(name)
		switch {
		case f == nil:
		case unusual:
			bad = reply.BadRequest("the form spells the field "+field+" unusually; write it as \""+field+"\"", field)
		case f.found:
			bad = reply.BadRequest("the form has two "+field+" parts; send one", field)
		case file:
			bad = reply.BadRequest(field+" must be a plain form field, not a file", field)
		default:
			v := body[start:end]
			trimmed := bytes.TrimSpace(v)
			off := start + bytes.Index(v, trimmed)
			if len(trimmed) == 0 {
				off = start
			}
			*f = bodyField{value: string(trimmed), found: true, start: off, end: off + len(trimmed)}
		}
		return bad.Status == 0
	})
	return m, bad
}

// checkModelName refuses a model name that is too long or holds anything
// but printable characters. The name is never echoed: it may be huge.
func checkModelName(field, s string) reply.Error {
	ok := len(s) <= maxModelBytes && utf8.ValidString(s)
	for _, r := range s {
		if !ok {
			break
		}
		ok = unicode.IsPrint(r)
	}
	if ok {
		return reply.Error{}
	}
	return reply.BadRequest(field+" must be at most 256 bytes of printable characters", field)
}

// pathModel is the model a native path names: Gemini's
// models/<model>:<method>, a /models/<id> path, or Workers AI's
// @cf/<author>/<model>.
func pathModel(prov provider.Provider, rest string) string {
	if m := modelFromPath(rest); m != "" {
		return m
	}
	if prov.Name == "workers-ai" && strings.HasPrefix(rest, "@") {
		return rest // /api/workers-ai/@cf/meta/llama-3.1-8b-instruct
	}
	return ""
}

// nativeModel is the model a request on /api/<provider>/... names, read
// where that provider reads it: ElevenLabs from model_id, Gemini (and a
// path such as Workers AI's that names one) from the path, the others
// from the body's model. A body that names another model than the one
// the provider acts on is refused.
func nativeModel(prov provider.Provider, rest, contentType string, body []byte) (string, reply.Error) {
	m, bad := readBodyModels(contentType, body)
	if bad.Status != 0 {
		return "", bad
	}
	inPath := pathModel(prov, rest)
	if bad = checkModelName("model", inPath); bad.Status != 0 {
		return "", bad
	}
	differ := func(field string) reply.Error {
		return reply.BadRequest("the body's "+field+" names another model than the one "+prov.Name+" will use; "+
			"name one model, where "+prov.Name+" reads it", field)
	}
	if prov.Name == "elevenlabs" {
		if m.model.found && m.model.value != m.modelID.value {
			return "", differ("model")
		}
		if inPath != "" && m.modelID.found && m.modelID.value != inPath {
			return "", differ("model_id")
		}
		if m.modelID.found {
			return m.modelID.value, reply.Error{}
		}
		return inPath, reply.Error{}
	}
	named := m.model.value
	if prov.Family == provider.FamilyGemini {
		named = strings.TrimPrefix(named, "models/")
	}
	switch {
	case inPath == "":
		return named, reply.Error{}
	case m.model.found && named != inPath:
		return "", differ("model")
	}
	return inPath, reply.Error{}
}

// pathOverBody takes the model of a /v1/models/<id> call (GET, DELETE)
// from the path, where the provider reads it; a body naming another model
// is refused.
func pathOverBody(m requestModel, rest string) (requestModel, reply.Error) {
	id, ok := strings.CutPrefix(rest, "/models/")
	if !ok {
		return m, reply.Error{}
	}
	if bad := checkModelName("model", id); bad.Status != 0 {
		return m, bad
	}
	switch {
	case m.name == "":
		m.model = id
	case m.name != id:
		return m, reply.BadRequest("the body's model names another model than the path; name one", "model")
	}
	return m, reply.Error{}
}

// maxPendingRollups bounds the rollup groups an isolate gathers before
// it writes them: each request reads and rewrites them all.
const maxPendingRollups = 256

// RefusedModel is the model a request its token's scope refuses is
// counted under: the model such a client names is not recorded, so that
// it cannot fill the rollups with names of its choosing.
const RefusedModel = "(refused)"

// refuseOutOfScope answers 403 when the client's token may not use
// provider/model, and counts the request under RefusedModel. (admit
// checks the same again; by then it always passes.)
func (px *Proxy) refuseOutOfScope(w http.ResponseWriter, c client, prov, model string) bool {
	t := c.tok
	if t == nil {
		return false
	}
	e := reply.Error{Status: http.StatusForbidden, Type: "permission_error"}
	switch {
	case len(t.Providers) > 0 && !slices.Contains(t.Providers, prov):
		e.Code, e.Message = "provider_not_allowed", "this keypool token may not use provider "+strconv.Quote(prov)+
			"; allowed: "+strings.Join(t.Providers, ", ")
	case len(t.Models) > 0 && !modelAllowed(t.Models, prov, model):
		e.Code, e.Message = "model_not_allowed", "this keypool token may not use model "+strconv.Quote(model)+
			"; allowed: "+strings.Join(t.Models, ", ")
	default:
		return false
	}
	e.Write(w)
	px.count(served{started: px.Now(), token: t.ID, prov: prov, model: RefusedModel, class: classRejected, answer: answerOf(w)},
		usage.Usage{}, false, 0, false)
	px.Defer(px.flushDue)
	return true
}
