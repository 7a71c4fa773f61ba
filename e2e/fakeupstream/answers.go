package fakeupstream

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"strconv"
	"strings"
)

// ChatCompletion is a non-streamed chat answer for model.
func ChatCompletion(model string) string {
	return `{"id":"chatcmpl-fake","object":"chat.completion","created":1732233000,"model":"` + model + `","choices":[{"index":0,"message":{"role":"assistant","content":"Hello from the fake upstream."},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":7,"total_tokens":12}}`
}

// OpenAIInvalidKey is OpenAI's answer to a revoked or mistyped key.
func OpenAIInvalidKey(masked string) Rule {
	return Rule{Status: http.StatusUnauthorized, Body: `{
    "error": {
        "message": "Incorrect API key provided: ` + masked + `. You can find your API key at https://platform.openai.com/account/api-keys.",
        "type": "invalid_request_error",
        "param": null,
        "code": "invalid_api_key"
    }
}
`}
}

// OpenAIMismatchedOrganization is OpenAI's answer to a request whose
// OpenAI-Organization header names an organisation the key does not
// belong to: a 401 about the header, not the key.
func OpenAIMismatchedOrganization() Rule {
	return Rule{Status: http.StatusUnauthorized, Body: `{"error":{"message":"OpenAI-Organization header should match organization for API key","type":"invalid_request_error","param":null,"code":"mismatched_organization"}}`}
}

// OpenAIMismatchedProject is the same refusal for an OpenAI-Project
// header that names another project than the key's.
func OpenAIMismatchedProject() Rule {
	return Rule{Status: http.StatusUnauthorized, Body: `{"error":{"message":"OpenAI-Project header should match project for API key","type":"invalid_request_error","param":null,"code":"mismatched_project"}}`}
}

// accountSelector is the fake's answer to a request that selects an
// organisation or project (Status 0: none selected). The fake's keys
// belong to no organisation a client could name, so any value mismatches.
func accountSelector(h http.Header) Rule {
	switch {
	case h.Get("OpenAI-Organization") != "":
		return OpenAIMismatchedOrganization()
	case h.Get("OpenAI-Project") != "":
		return OpenAIMismatchedProject()
	}
	return Rule{}
}

// Account-naming headers the real providers put on their answers, which
// keypool must not pass on: they tell a client which account is behind
// a pool key.
const (
	FakeOrganization   = "org-fakeorg0123456789"
	FakeProject        = "proj_fakeproject0123"
	FakeAnthropicOrgID = "5b6a3a7e-0f4c-4c8e-9d2a-8c1f0e7d6b5a"
)

// accountHeaders sets the headers a provider's answer carries: OpenAI's
// (and the compatible services') organisation, project, processing time,
// version, request id, rate limits and Cloudflare cookie; Anthropic's
// organisation id and request id.
func accountHeaders(h http.Header, path string) {
	switch {
	case strings.HasSuffix(path, "/messages"):
		h.Set("Anthropic-Organization-Id", FakeAnthropicOrgID)
		h.Set("Request-Id", "req_011fake")
		h.Set("Anthropic-Ratelimit-Requests-Remaining", "49")
	case strings.HasPrefix(path, "/v1beta/") && !strings.Contains(path, "/openai/"):
		h.Set("Server-Timing", "gfet4t7; dur=82")
	default:
		h.Set("Openai-Organization", FakeOrganization)
		h.Set("Openai-Project", FakeProject)
		h.Set("Openai-Processing-Ms", "12")
		h.Set("Openai-Version", "2020-10-01")
		h.Set("X-Request-Id", "req_fake0123")
		h.Set("X-Ratelimit-Limit-Requests", "10000")
		h.Set("X-Ratelimit-Remaining-Requests", "9999")
		h.Set("Set-Cookie", "__cf_bm=fakecookie; path=/; HttpOnly; Secure; SameSite=None")
	}
}

// OpenAIRateLimited is OpenAI's per-minute rate limit answer for model,
// with a Retry-After of retryAfter seconds.
func OpenAIRateLimited(model string, retryAfter int) Rule {
	return Rule{
		Status: http.StatusTooManyRequests,
		Header: map[string]string{"Retry-After": strconv.Itoa(retryAfter), "X-Ratelimit-Reset-Requests": strconv.Itoa(retryAfter) + "s"},
		Body: `{
    "error": {
        "message": "Rate limit reached for ` + model + ` in organization org-fake on requests per min (RPM): Limit 3, Used 3, Requested 1. Please try again in ` + strconv.Itoa(retryAfter) + `s. Visit https://platform.openai.com/account/rate-limits to learn more.",
        "type": "requests",
        "param": null,
        "code": "rate_limit_exceeded"
    }
}
`,
		Models: []string{model},
	}
}

// OpenAIBadRequest is OpenAI's answer to invalid parameters: the client's
// fault, not the key's.
func OpenAIBadRequest(model string) Rule {
	return Rule{Status: http.StatusBadRequest, Models: []string{model}, Body: `{
  "error": {
    "message": "Invalid value for 'temperature': expected a number between 0 and 2.",
    "type": "invalid_request_error",
    "param": "temperature",
    "code": "invalid_value"
  }
}
`}
}

// OpenAIServerError is the 500 OpenAI sends when it fails internally.
func OpenAIServerError() Rule {
	return Rule{Status: http.StatusInternalServerError, Body: `{"error":{"message":"The server had an error while processing your request. Sorry about that!","type":"server_error","param":null,"code":null}}`}
}

func (r Rule) matches(model, path string) bool {
	if len(r.Models) > 0 && !contains(r.Models, model) {
		return false
	}
	if len(r.Paths) == 0 {
		return true
	}
	for _, p := range r.Paths {
		if strings.Contains(path, p) {
			return true
		}
	}
	return false
}

// Answers the fake serves when no rule applies.

// OpenAIModels is the answer to GET …/models on OpenAI-compatible paths.
const OpenAIModels = `{"object":"list","data":[{"id":"gpt-4o-mini","object":"model","created":1721172741,"owned_by":"system"},{"id":"text-embedding-3-small","object":"model","created":1705948997,"owned_by":"system"}]}`

// GeminiOpenAIModels is the answer to GET …/v1beta/openai/models (Gemini's
// OpenAI-compatible API), whose ids carry Google's "models/" prefix.
const GeminiOpenAIModels = `{"object":"list","data":[{"id":"models/gemini-2.0-flash","object":"model","created":1,"owned_by":"google"},{"id":"models/gemini-2.5-pro","object":"model","created":1,"owned_by":"google"}]}`

// ImageGeneration is the answer to POST …/images/generations.
const ImageGeneration = `{"created":1732233000,"data":[{"url":"https://example.invalid/fake.png"}]}`

// Embedding is the answer to POST …/embeddings for model.
func Embedding(model string) string {
	return `{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.1,0.2,0.3]}],"model":"` + model + `","usage":{"prompt_tokens":3,"total_tokens":3}}`
}

// Rerank is the answer to POST …/rerank for model.
func Rerank(model string) string {
	return `{"id":"rerank-fake","results":[{"index":0,"relevance_score":0.9}],"model":"` + model + `"}`
}

// Response is the answer to POST …/responses (OpenAI Responses API).
func Response(model string) string {
	// The shape of OpenAI's API reference (SDKs check it field by field).
	return `{"id":"resp_fake","object":"response","created_at":1741476542,"status":"completed","error":null,"incomplete_details":null,` +
		`"instructions":null,"max_output_tokens":null,"model":"` + model + `","output":[{"type":"message","id":"msg_fake","status":"completed",` +
		`"role":"assistant","content":[{"type":"output_text","text":"Hello from the fake upstream.","annotations":[]}]}],` +
		`"parallel_tool_calls":true,"previous_response_id":null,"reasoning":{"effort":null,"summary":null},"store":true,"temperature":1.0,` +
		`"text":{"format":{"type":"text"}},"tool_choice":"auto","tools":[],"top_p":1.0,"truncation":"disabled",` +
		`"usage":{"input_tokens":5,"input_tokens_details":{"cached_tokens":0},"output_tokens":7,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":12},` +
		`"user":null,"metadata":{}}`
}

// Transcription is the answer to POST …/audio/transcriptions and
// …/audio/translations: it echoes the multipart model field, the hex
// SHA-256 of the file part's content and of the whole raw request body, so
// a test can prove the upload reached the provider intact.
func Transcription(model, fileSHA256, bodySHA256 string) string {
	return `{"text":"fake transcript","model":"` + model + `","file_sha256":"` + fileSHA256 + `","body_sha256":"` + bodySHA256 + `"}`
}

// GeminiGenerateContent is the answer to Gemini's native
// POST …/models/<model>:generateContent.
func GeminiGenerateContent(model string) string {
	return `{"candidates":[{"content":{"parts":[{"text":"Hello from the fake Gemini."}],"role":"model"},"finishReason":"STOP","index":0}],"usageMetadata":{"promptTokenCount":5,"candidatesTokenCount":7,"totalTokenCount":12},"modelVersion":"` + model + `"}`
}

// AnthropicMessage is the answer to Anthropic's POST …/v1/messages.
func AnthropicMessage(model string) string {
	return `{"id":"msg_fake","type":"message","role":"assistant","model":"` + model + `","content":[{"type":"text","text":"Hello from the fake Claude."}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":3,"output_tokens":6}}`
}

// SpeechAudioSize is the length of SpeechAudio.
const SpeechAudioSize = 2048

// SpeechAudio returns the audio/mpeg bytes answered to POST …/audio/speech
// and ElevenLabs' POST …/v1/text-to-speech/<voice>: SpeechAudioSize
// deterministic bytes, starting like an MPEG-1 Layer III frame. It returns
// a fresh copy on each call.
func SpeechAudio() []byte {
	b := make([]byte, SpeechAudioSize)
	copy(b, []byte{0xFF, 0xFB, 0x90, 0x64})
	for i := 4; i < len(b); i++ {
		b[i] = byte(i*31 + 7)
	}
	return b
}

func writeAudio(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "audio/mpeg")
	w.Header().Set("Content-Length", strconv.Itoa(SpeechAudioSize))
	w.WriteHeader(http.StatusOK)
	w.Write(SpeechAudio())
}

func isAudioUpload(path string) bool {
	return strings.HasSuffix(path, "/audio/transcriptions") || strings.HasSuffix(path, "/audio/translations")
}

type multipartForm struct {
	model      string
	fileSHA256 string
}

// parseMultipart reads a multipart/form-data upload the way OpenAI's audio
// endpoints do: a "file" part and a "model" field. On error the form holds
// what was read before it.
func parseMultipart(contentType string, body []byte) (*multipartForm, error) {
	mt, params, err := mime.ParseMediaType(contentType)
	if err != nil || mt != "multipart/form-data" || params["boundary"] == "" {
		return nil, errors.New("Invalid Content-Type: expected multipart/form-data with a boundary.")
	}
	f := &multipartForm{}
	mr := multipart.NewReader(bytes.NewReader(body), params["boundary"])
	gotFile := false
	for {
		part, err := mr.NextRawPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			return f, errors.New("Could not parse multipart form: " + err.Error())
		}
		data, err := io.ReadAll(part)
		if err != nil {
			return f, errors.New("Could not parse multipart form: " + err.Error())
		}
		switch part.FormName() {
		case "file":
			f.fileSHA256, gotFile = sha256Hex(data), true
		case "model":
			f.model = string(data)
		}
	}
	if !gotFile {
		return f, errors.New("1 validation error for Request\nbody -> file\n  field required (type=value_error.missing)")
	}
	return f, nil
}

func sha256Hex(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// openAIError is an OpenAI-style error body; empty param or code are null.
func openAIError(message, typ, param, code string) string {
	str := func(s string) any {
		if s == "" {
			return nil
		}
		return s
	}
	b, _ := json.Marshal(map[string]any{"error": map[string]any{
		"message": message, "type": typ, "param": str(param), "code": str(code),
	}})
	return string(b)
}

// pretty indents a compact JSON body the way the provider does (Google: two
// spaces, OpenAI: four) and ends it with a newline.
func pretty(compact, indent string) string {
	var b bytes.Buffer
	if err := json.Indent(&b, []byte(compact), "", indent); err != nil {
		panic("fakeupstream: bad JSON in a canned body: " + err.Error())
	}
	b.WriteByte('\n')
	return b.String()
}
