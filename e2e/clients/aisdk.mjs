// Runs the Vercel AI SDK (ai 6 with @ai-sdk/openai, @ai-sdk/anthropic and
// @ai-sdk/google 3) against keypool as a new user would configure it, and
// prints what each call got as one JSON array. KEYPOOL_BASE is keypool's
// address, KEYPOOL_TOKEN a client token.
import { generateText, streamText } from "ai";
import { createOpenAI } from "@ai-sdk/openai";
import { createAnthropic } from "@ai-sdk/anthropic";
import { createGoogleGenerativeAI } from "@ai-sdk/google";

const base = process.env.KEYPOOL_BASE;
const apiKey = process.env.KEYPOOL_TOKEN;
const openai = createOpenAI({ baseURL: base + "/v1", apiKey });
const anthropic = createAnthropic({ baseURL: base + "/api/anthropic/v1", apiKey });
const google = createGoogleGenerativeAI({ baseURL: base + "/api/google-ai-studio/v1beta", apiKey });

const models = {
  "openai-chat": openai.chat("gpt-4o-mini"),
  "openai-responses": openai.responses("gpt-4o-mini"),
  anthropic: anthropic("claude-sonnet-4-5"),
  google: google("gemini-2.0-flash"),
};

const out = [];
for (const [name, model] of Object.entries(models)) {
  const began = Date.now();
  try {
    const g = await generateText({ model, prompt: "Say hi", maxRetries: 0 });
    out.push({ name: name + " generate", text: g.text, usage: g.usage, ms: Date.now() - began });
  } catch (e) {
    out.push({ name: name + " generate", error: String(e && e.message ? e.message : e) });
  }
  const began2 = Date.now();
  try {
    const s = streamText({ model, prompt: "Say hi", maxRetries: 0, onError: () => {} });
    let text = "";
    let chunks = 0;
    for await (const part of s.textStream) {
      text += part;
      chunks++;
    }
    out.push({ name: name + " stream", text, chunks, usage: await s.usage, ms: Date.now() - began2 });
  } catch (e) {
    out.push({ name: name + " stream", error: String(e && e.message ? e.message : e) });
  }
}
process.stdout.write(JSON.stringify(out));
