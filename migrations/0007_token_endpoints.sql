-- Client tokens get an endpoint scope: 'inference' (the default, also for
-- the tokens that exist already) reaches only the inference endpoints
-- keypool knows (chat, completions, embeddings, images, audio, rerank,
-- responses, models; Gemini generate/stream/count/embed; Anthropic
-- messages…); 'all' passes every provider path through (files, batches,
-- fine-tuning, credential-minting endpoints…).
ALTER TABLE tokens ADD COLUMN endpoints TEXT NOT NULL DEFAULT 'inference'
  CHECK (endpoints IN ('inference', 'all'));
