package provider

import "testing"

// TestInference: the endpoint classifier on method and the path the
// provider acts on, for every surface keypool sends paths to.
func TestInference(t *testing.T) {
	cases := []struct {
		prov    string
		surface Surface
		method  string
		path    string
		want    bool
	}{
		// keypool's /v1: the OpenAI-compatible inference endpoints.
		{"openai", SurfaceOpenAI, "POST", "/chat/completions", true},
		{"openai", SurfaceOpenAI, "POST", "/completions", true},
		{"openai", SurfaceOpenAI, "POST", "/embeddings", true},
		{"openai", SurfaceOpenAI, "POST", "/moderations", true},
		{"openai", SurfaceOpenAI, "POST", "/images/generations", true},
		{"openai", SurfaceOpenAI, "POST", "/images/edits", true},
		{"openai", SurfaceOpenAI, "POST", "/images/variations", true},
		{"openai", SurfaceOpenAI, "POST", "/audio/speech", true},
		{"openai", SurfaceOpenAI, "POST", "/audio/transcriptions", true},
		{"openai", SurfaceOpenAI, "POST", "/audio/translations", true},
		{"siliconflow", SurfaceOpenAI, "POST", "/rerank", true},
		{"openai", SurfaceOpenAI, "POST", "/responses", true},
		{"openai", SurfaceOpenAI, "POST", "/responses/input_tokens", true},
		{"openai", SurfaceOpenAI, "GET", "/models", true},
		{"openai", SurfaceOpenAI, "HEAD", "/models", true},
		{"openai", SurfaceOpenAI, "GET", "/models/gpt-4o-mini", true},
		{"openai", SurfaceOpenAI, "GET", "/models/ft:gpt-4o-mini:org:custom:abc", true},
		{"siliconflow", SurfaceOpenAI, "GET", "/models/Qwen/Qwen2.5-7B-Instruct", true},
		// Stored conversations, files, batches, fine-tuning, assistants,
		// vector stores, credential minting, admin: not inference.
		{"openai", SurfaceOpenAI, "GET", "/chat/completions", false},
		{"openai", SurfaceOpenAI, "GET", "/chat/completions/chatcmpl-abc", false},
		{"openai", SurfaceOpenAI, "POST", "/chat/completions/chatcmpl-abc", false},
		{"openai", SurfaceOpenAI, "DELETE", "/chat/completions/chatcmpl-abc", false},
		{"openai", SurfaceOpenAI, "GET", "/responses/resp_abc", false},
		// The Responses WebSocket; a plain GET of the same path lists
		// stored responses, and no other path opens a socket.
		{"openai", SurfaceOpenAI, MethodSocket, "/responses", true},
		{"openai", SurfaceOpenAI, "GET", "/responses", false},
		{"openai", SurfaceOpenAI, MethodSocket, "/chat/completions", false},
		{"openai", SurfaceOpenAI, MethodSocket, "/responses/resp_abc", false},
		{"openai", SurfaceOpenAI, "DELETE", "/responses/resp_abc", false},
		{"openai", SurfaceOpenAI, "GET", "/responses/resp_abc/input_items", false},
		{"openai", SurfaceOpenAI, "POST", "/responses/resp_abc/cancel", false},
		{"openai", SurfaceOpenAI, "GET", "/files", false},
		{"openai", SurfaceOpenAI, "POST", "/files", false},
		{"openai", SurfaceOpenAI, "GET", "/files/file-abc/content", false},
		{"openai", SurfaceOpenAI, "POST", "/uploads", false},
		{"openai", SurfaceOpenAI, "POST", "/batches", false},
		{"openai", SurfaceOpenAI, "POST", "/fine_tuning/jobs", false},
		{"openai", SurfaceOpenAI, "POST", "/assistants", false},
		{"openai", SurfaceOpenAI, "POST", "/threads/runs", false},
		{"openai", SurfaceOpenAI, "POST", "/vector_stores", false},
		{"openai", SurfaceOpenAI, "POST", "/realtime/sessions", false},
		{"openai", SurfaceOpenAI, "POST", "/realtime/transcription_sessions", false},
		{"openai", SurfaceOpenAI, "POST", "/realtime/client_secrets", false},
		{"openai", SurfaceOpenAI, "GET", "/organization/users", false},
		{"openai", SurfaceOpenAI, "GET", "/organization/admin_api_keys", false},
		{"openai", SurfaceOpenAI, "DELETE", "/models/ft:gpt-4o-mini:org:custom:abc", false},
		{"openai", SurfaceOpenAI, "POST", "/models", false},
		{"siliconflow", SurfaceOpenAI, "GET", "/user/info", false},
		// Path tricks: exact segments only.
		{"openai", SurfaceOpenAI, "POST", "", false},
		{"openai", SurfaceOpenAI, "POST", "/", false},
		{"openai", SurfaceOpenAI, "POST", "chat/completions", false},
		{"openai", SurfaceOpenAI, "POST", "/chat/completions/", false},
		{"openai", SurfaceOpenAI, "POST", "//chat/completions", false},
		{"openai", SurfaceOpenAI, "POST", "/chat//completions", false},
		{"openai", SurfaceOpenAI, "POST", "/Chat/Completions", false},
		{"openai", SurfaceOpenAI, "POST", "/CHAT/COMPLETIONS", false},
		{"openai", SurfaceOpenAI, "post", "/chat/completions", false},
		{"openai", SurfaceOpenAI, "POST", "/chat/completions/../../files", false},
		{"openai", SurfaceOpenAI, "POST", "/chat/completions/..", false},
		{"openai", SurfaceOpenAI, "POST", "/./chat/completions", false},
		{"openai", SurfaceOpenAI, "POST", "/chat/completions?x=1", false},
		{"openai", SurfaceOpenAI, "POST", "/chat/completions;x", false},
		{"openai", SurfaceOpenAI, "POST", "/chat/completions%2F..%2Ffiles", false},
		{"openai", SurfaceOpenAI, "POST", "/chat%2Fcompletions", false},
		{"openai", SurfaceOpenAI, "POST", "/chat\\completions", false},
		{"openai", SurfaceOpenAI, "GET", "/models/..", false},
		{"openai", SurfaceOpenAI, "GET", "/models/../files", false},
		{"openai", SurfaceOpenAI, "GET", "/models/x/../../files", false},
		{"openai", SurfaceOpenAI, "GET", "/models/", false},
		{"openai", SurfaceOpenAI, "GET", "/models//x", false},
		{"openai", SurfaceOpenAI, "GET", "/models/x%2F..", false},
		{"openai", SurfaceOpenAI, "GET", "/models/x\\..\\..\\files", false},
		{"openai", SurfaceOpenAI, "GET", "/models/a b", false},

		// Native OpenAI-style paths below each provider's native prefix.
		{"openai", SurfaceGateway, "POST", "/chat/completions", true},
		{"openai", SurfaceGateway, "POST", "/embeddings", true},
		{"openai", SurfaceGateway, "GET", "/models", true},
		{"openai", SurfaceGateway, "POST", "/v1/chat/completions", false}, // …/v1/v1/chat/completions
		{"openai", SurfaceGateway, "GET", "/files", false},
		{"openai", SurfaceGateway, "POST", "/realtime/sessions", false},
		{"groq", SurfaceGateway, "POST", "/chat/completions", true},
		{"groq", SurfaceNative, "POST", "/chat/completions", true},
		{"groq", SurfaceNative, "POST", "/audio/transcriptions", true},
		{"groq", SurfaceNative, "POST", "/openai/v1/chat/completions", false},
		{"groq", SurfaceNative, "GET", "/batches", false},
		{"siliconflow", SurfaceNative, "POST", "/v1/chat/completions", true},
		{"siliconflow", SurfaceNative, "POST", "/v1/rerank", true},
		{"siliconflow", SurfaceNative, "GET", "/v1/user/info", false},
		{"siliconflow", SurfaceNative, "POST", "/chat/completions", false},
		{"openrouter", SurfaceGateway, "POST", "/v1/chat/completions", true},
		{"openrouter", SurfaceGateway, "GET", "/v1/models", true},
		{"openrouter", SurfaceGateway, "GET", "/v1/credits", false},
		{"openrouter", SurfaceGateway, "POST", "/v1/keys", false},
		{"mistral", SurfaceGateway, "POST", "/v1/chat/completions", true},
		{"mistral", SurfaceGateway, "POST", "/v1/fim/completions", true},
		{"mistral", SurfaceGateway, "POST", "/v1/files", false},
		{"mistral", SurfaceGateway, "POST", "/v1/agents/completions", false},
		{"cerebras", SurfaceGateway, "POST", "/chat/completions", true},
		{"grok", SurfaceGateway, "POST", "/v1/chat/completions", true},
		{"grok", SurfaceGateway, "POST", "/v1/images/generations", true},
		{"perplexity-ai", SurfaceGateway, "POST", "/chat/completions", true},
		{"perplexity-ai", SurfaceGateway, "POST", "/async/chat/completions", false},
		{"deepseek", SurfaceGateway, "POST", "/chat/completions", true},
		{"deepseek", SurfaceGateway, "POST", "/v1/chat/completions", true},
		{"deepseek", SurfaceGateway, "POST", "/beta/completions", true},
		{"deepseek", SurfaceGateway, "GET", "/user/balance", false},
		{"cohere", SurfaceGateway, "POST", "/v2/chat", true},
		{"cohere", SurfaceGateway, "POST", "/v1/embed", true},
		{"cohere", SurfaceGateway, "POST", "/v2/rerank", true},
		{"cohere", SurfaceGateway, "POST", "/compatibility/v1/chat/completions", true},
		{"cohere", SurfaceGateway, "POST", "/v1/datasets", false},
		{"cohere", SurfaceGateway, "POST", "/v1/finetuning/finetuned-models", false},

		// Gemini: models/x:method, the model lists, its OpenAI-compatible API.
		{"google-ai-studio", SurfaceGateway, "POST", "/v1beta/models/gemini-2.0-flash:generateContent", true},
		{"google-ai-studio", SurfaceNative, "POST", "/v1beta/models/gemini-2.0-flash:streamGenerateContent", true},
		{"google-ai-studio", SurfaceNative, "POST", "/v1beta/models/gemini-2.5-flash-preview-tts:generateContent", true},
		{"google-ai-studio", SurfaceNative, "POST", "/v1beta/models/gemini-2.0-flash:countTokens", true},
		{"google-ai-studio", SurfaceNative, "POST", "/v1beta/models/text-embedding-004:embedContent", true},
		{"google-ai-studio", SurfaceNative, "POST", "/v1beta/models/text-embedding-004:batchEmbedContents", true},
		{"google-ai-studio", SurfaceNative, "POST", "/v1beta/models/imagen-3.0-generate-002:predict", true},
		{"google-ai-studio", SurfaceNative, "POST", "/v1/models/gemini-2.0-flash:generateContent", true},
		{"google-ai-studio", SurfaceNative, "POST", "/v1alpha/models/gemini-2.0-flash:generateContent", true},
		{"google-ai-studio", SurfaceNative, "GET", "/v1beta/models", true},
		{"google-ai-studio", SurfaceNative, "GET", "/v1beta/models/gemini-2.0-flash", true},
		{"google-ai-studio", SurfaceNative, "POST", "/v1beta/openai/chat/completions", true},
		{"google-ai-studio", SurfaceNative, "POST", "/v1beta/openai/embeddings", true},
		{"google-ai-studio", SurfaceNative, "GET", "/v1beta/openai/models", true},
		{"google-ai-studio", SurfaceNative, "POST", "/v1alpha/auth_tokens", false},
		{"google-ai-studio", SurfaceNative, "POST", "/v1beta/auth_tokens", false},
		{"google-ai-studio", SurfaceNative, "GET", "/v1beta/files", false},
		{"google-ai-studio", SurfaceNative, "POST", "/upload/v1beta/files", false},
		{"google-ai-studio", SurfaceNative, "GET", "/v1beta/files/abc", false},
		{"google-ai-studio", SurfaceNative, "POST", "/v1beta/cachedContents", false},
		{"google-ai-studio", SurfaceNative, "GET", "/v1beta/tunedModels", false},
		{"google-ai-studio", SurfaceNative, "POST", "/v1beta/tunedModels/x:generateContent", false},
		{"google-ai-studio", SurfaceNative, "POST", "/v1beta/models/gemini-2.0-flash:batchGenerateContent", false},
		{"google-ai-studio", SurfaceNative, "POST", "/v1beta/batches", false},
		{"google-ai-studio", SurfaceNative, "GET", "/v1beta/operations", false},
		{"google-ai-studio", SurfaceNative, "POST", "/v1beta/openai/files", false},
		{"google-ai-studio", SurfaceNative, "POST", "/v1beta/models/:generateContent", false},
		{"google-ai-studio", SurfaceNative, "POST", "/v1beta/models/gemini-2.0-flash:GenerateContent", false},
		{"google-ai-studio", SurfaceNative, "POST", "/v1beta/models/gemini-2.0-flash:generateContent/", false},
		{"google-ai-studio", SurfaceNative, "POST", "/v1beta/models/x:y:generateContent", false},
		{"google-ai-studio", SurfaceNative, "POST", "/v1beta/models/x/../../files:generateContent", false},
		{"google-ai-studio", SurfaceNative, "POST", "/v1beta/models/..:generateContent", false},
		{"google-ai-studio", SurfaceNative, "POST", "/v1beta/models/x%2F..%2Ffiles:generateContent", false},
		{"google-ai-studio", SurfaceNative, "POST", "/v1beta//models/x:generateContent", false},
		{"google-ai-studio", SurfaceNative, "POST", "/V1BETA/models/x:generateContent", false},
		{"google-ai-studio", SurfaceNative, "GET", "/v1beta/models/gemini-2.0-flash:generateContent", true}, // GET of a method: no such thing, no harm
		{"google-ai-studio", SurfaceNative, "GET", "/v1beta/models/a/b", false},

		// Anthropic.
		{"anthropic", SurfaceGateway, "POST", "/v1/messages", true},
		{"anthropic", SurfaceGateway, "POST", "/v1/messages/count_tokens", true},
		{"anthropic", SurfaceGateway, "GET", "/v1/models", true},
		{"anthropic", SurfaceGateway, "GET", "/v1/models/claude-3-5-haiku-latest", true},
		{"anthropic", SurfaceGateway, "POST", "/v1/chat/completions", true}, // its OpenAI SDK compatibility
		{"anthropic", SurfaceGateway, "POST", "/v1/messages/batches", false},
		{"anthropic", SurfaceGateway, "GET", "/v1/files", false},
		{"anthropic", SurfaceGateway, "GET", "/v1/organizations/api_keys", false},
		{"anthropic", SurfaceGateway, "POST", "/v1/messages/", false},

		// ElevenLabs.
		{"elevenlabs", SurfaceGateway, "POST", "/v1/text-to-speech/21m00Tcm4TlvDq8ikWAM", true},
		{"elevenlabs", SurfaceGateway, "POST", "/v1/text-to-speech/21m00Tcm4TlvDq8ikWAM/stream", true},
		{"elevenlabs", SurfaceGateway, "POST", "/v1/text-to-speech/21m00Tcm4TlvDq8ikWAM/with-timestamps", true},
		{"elevenlabs", SurfaceGateway, "POST", "/v1/speech-to-text", true},
		{"elevenlabs", SurfaceGateway, "GET", "/v1/models", true},
		{"elevenlabs", SurfaceGateway, "GET", "/v1/user", false},
		{"elevenlabs", SurfaceGateway, "POST", "/v1/voices/add", false},
		{"elevenlabs", SurfaceGateway, "POST", "/v1/chat/completions", false}, // no OpenAI-compatible API
		{"elevenlabs", SurfaceGateway, "POST", "/v1/text-to-speech/..", false},

		// Workers AI: run a model; its OpenAI API through the gateway.
		{"workers-ai", SurfaceNative, "POST", "/@cf/meta/llama-3.1-8b-instruct", true},
		{"workers-ai", SurfaceGateway, "POST", "/@cf/meta/llama-3.1-8b-instruct", true},
		{"workers-ai", SurfaceNative, "POST", "/@hf/thebloke/mistral-7b-instruct-v0.1-awq", true},
		{"workers-ai", SurfaceGateway, "POST", "/v1/chat/completions", true},
		{"workers-ai", SurfaceNative, "POST", "/@cf", false},
		{"workers-ai", SurfaceNative, "POST", "/@cf/", false},
		{"workers-ai", SurfaceNative, "POST", "/@cf/../../../user/tokens/verify", false},
		{"workers-ai", SurfaceNative, "GET", "/@cf/meta/llama-3.1-8b-instruct", false},
		{"workers-ai", SurfaceNative, "POST", "/finetunes", false},
		{"workers-ai", SurfaceNative, "GET", "/models/search", false},

		// Azure OpenAI: per deployment; the gateway's resource/deployment form.
		{"azure-openai", SurfaceNative, "POST", "/openai/deployments/gpt4o/chat/completions", true},
		{"azure-openai", SurfaceNative, "POST", "/openai/deployments/emb/embeddings", true},
		{"azure-openai", SurfaceNative, "POST", "/openai/v1/chat/completions", true},
		{"azure-openai", SurfaceGateway, "POST", "/myresource/gpt4o/chat/completions", true},
		{"azure-openai", SurfaceNative, "POST", "/myresource/gpt4o/chat/completions", false},
		{"azure-openai", SurfaceNative, "POST", "/openai/files", false},
		{"azure-openai", SurfaceNative, "POST", "/openai/v1/files", false},
		{"azure-openai", SurfaceGateway, "POST", "/openai/deployments/gpt4o/files", false},

		// /api/compat: its chat endpoint only.
		{"", SurfaceCompat, "POST", "/chat/completions", true},
		{"", SurfaceCompat, "GET", "/chat/completions", false},
		{"", SurfaceCompat, "POST", "/files", false},
		{"", SurfaceCompat, "POST", "/chat/completions/", false},
	}
	for _, c := range cases {
		p, known := Lookup(c.prov)
		if !known && c.prov != "" {
			t.Fatalf("unknown provider %q in the table", c.prov)
		}
		if got := Inference(p, c.surface, c.method, c.path); got != c.want {
			t.Errorf("Inference(%s, surface %d, %s %s) = %v, want %v", c.prov, c.surface, c.method, c.path, got, c.want)
		}
	}
}

// Every provider keypool knows has inference endpoints on its native
// route, and none lets a files path through: a provider added to the
// registry without its endpoints is noticed.
func TestInferenceEveryProvider(t *testing.T) {
	native := map[string]string{
		"openai": "/chat/completions", "groq": "/chat/completions", "cerebras": "/chat/completions",
		"perplexity-ai": "/chat/completions", "google-ai-studio": "/v1beta/models/gemini-2.0-flash:generateContent",
		"anthropic": "/v1/messages", "elevenlabs": "/v1/text-to-speech/21m00Tcm4TlvDq8ikWAM",
		"workers-ai": "/@cf/meta/llama-3.1-8b-instruct", "azure-openai": "/openai/deployments/d/chat/completions",
		"cohere": "/v2/chat", "siliconflow": "/v1/chat/completions", "deepseek": "/chat/completions",
		"openrouter": "/v1/chat/completions", "mistral": "/v1/chat/completions", "grok": "/v1/chat/completions",
	}
	for _, name := range Names() {
		p, _ := Lookup(name)
		path, ok := native[name]
		if !ok {
			t.Errorf("provider %s has no inference path in this test: add its endpoints to endpoints.go and here", name)
			continue
		}
		for _, s := range []Surface{SurfaceNative, SurfaceGateway} {
			if !Inference(p, s, "POST", path) {
				t.Errorf("%s surface %d: POST %s refused", name, s, path)
			}
			for _, files := range []string{"/files", "/v1/files", p.OpenAIPrefix[min(len(p.OpenAIPrefix), len(p.NativePrefix)):] + "/files"} {
				if Inference(p, s, "GET", files) || Inference(p, s, "POST", files) {
					t.Errorf("%s surface %d: %s allowed", name, s, files)
				}
			}
		}
	}
}
