// #/api: how to call this keypool, with examples for this very origin.
import { copyText } from "../dialog.js";
import { h } from "../dom.js";
import { t } from "../i18n.js";
import { toast } from "../toast.js";

export function examples(origin) {
  return {
    curl: `curl ${origin}/v1/chat/completions \\
  -H "Authorization: Bearer $KEYPOOL_TOKEN" \\
  -H "Content-Type: application/json" \\
  -d '{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hello"}], "stream": true}'`,
    python: `from openai import OpenAI

client = OpenAI(base_url="${origin}/v1", api_key="<KEYPOOL_TOKEN>")
reply = client.chat.completions.create(
    model="gpt-4o-mini",
    messages=[{"role": "user", "content": "Hello"}],
)
print(reply.choices[0].message.content)`,
    node: `import OpenAI from "openai";

const client = new OpenAI({ baseURL: "${origin}/v1", apiKey: process.env.KEYPOOL_TOKEN });
const reply = await client.chat.completions.create({
  model: "gpt-4o-mini",
  messages: [{ role: "user", content: "Hello" }],
});
console.log(reply.choices[0].message.content);`,
  };
}

export function apiPage(root) {
  const origin = location.origin;
  const ex = examples(origin);
  const block = (name, titleKey) => {
    const copy = h("button", { type: "button", class: "btn", testid: "api-copy-" + name, i18n: "api.copy" });
    copy.addEventListener("click", async () => {
      const ok = await copyText(ex[name]);
      toast(t(ok ? "common.copied" : "common.copyFailed"), ok ? "info" : "error");
    });
    return h("section", { class: "panel" },
      h("div", { class: "panel-head" }, h("h2", { i18n: titleKey }), copy),
      h("pre", { class: "code" }, h("code", { testid: "api-" + name, text: ex[name] })));
  };
  const routes = ["/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/images/generations", "/v1/audio/speech",
    "/v1/audio/transcriptions", "/v1/audio/translations", "/v1/rerank", "/v1/responses", "/v1/models"];
  root.append(
    h("div", { class: "page-head" }, h("h1", { i18n: "api.title" })),
    h("p", { i18n: "api.intro" }),
    h("section", { class: "panel" },
      h("div", { class: "panel-head" }, h("h2", { i18n: "api.base" })),
      h("pre", { class: "code" }, h("code", { testid: "api-base", text: origin + "/v1" }))),
    block("curl", "api.curl"),
    block("python", "api.python"),
    block("node", "api.node"),
    h("section", { class: "panel" },
      h("h2", { i18n: "api.endpoints" }),
      h("ul", { class: "routes" }, routes.map((r) => h("li", {}, h("code", { class: "mono", text: r })))),
      h("h2", { i18n: "api.models" }),
      h("p", { i18n: "api.modelsText" }),
      h("h2", { i18n: "api.native" }),
      h("p", { i18n: "api.nativeText" }),
      h("pre", { class: "code" }, h("code", { testid: "api-native", text: `curl "${origin}/api/google-ai-studio/v1beta/models/gemini-2.0-flash:generateContent" \\
  -H "x-goog-api-key: $KEYPOOL_TOKEN" -H "Content-Type: application/json" \\
  -d '{"contents": [{"parts": [{"text": "Hello"}]}]}'` }))));
}
