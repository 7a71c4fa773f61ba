package fakeupstream

import (
	"strconv"
	"strings"

	"github.com/tidwall/gjson"
)

// geminiJSONAnswer is GeminiGenerateContent for a request that asks for
// JSON (generationConfig.responseMimeType "application/json", as Gemini
// CLI's model router does): the text is a JSON value that fits the
// request's responseJsonSchema (or responseSchema), so a client that
// parses it goes on instead of retrying.
func geminiJSONAnswer(model string, body []byte) (string, bool) {
	gc := gjson.GetBytes(body, "generationConfig")
	if !strings.EqualFold(gc.Get("responseMimeType").String(), "application/json") {
		return "", false
	}
	schema := gc.Get("responseJsonSchema")
	if !schema.Exists() {
		schema = gc.Get("responseSchema")
	}
	text := schemaValue(schema, 0)
	return strings.Replace(GeminiGenerateContent(model), `"text":"Hello from the fake Gemini."`, `"text":`+strconv.Quote(text), 1), true
}

// schemaValue is a small JSON value of schema: each property present
// (required or not), the first enum value, empty arrays, zero numbers.
func schemaValue(schema gjson.Result, depth int) string {
	if e := schema.Get("enum"); e.IsArray() && len(e.Array()) > 0 {
		return e.Array()[0].Raw
	}
	typ := strings.ToLower(schema.Get("type").String())
	if schema.Get("type").IsArray() {
		typ = strings.ToLower(schema.Get("type.0").String())
	}
	switch {
	case depth > 8:
		return "null"
	case typ == "object" || schema.Get("properties").Exists():
		var parts []string
		schema.Get("properties").ForEach(func(k, v gjson.Result) bool {
			parts = append(parts, strconv.Quote(k.String())+":"+schemaValue(v, depth+1))
			return true
		})
		return "{" + strings.Join(parts, ",") + "}"
	case typ == "array":
		return "[]"
	case typ == "string":
		return `"fake"`
	case typ == "number" || typ == "integer":
		return "0"
	case typ == "boolean":
		return "false"
	}
	return "null"
}
