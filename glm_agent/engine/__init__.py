"""The local inference engine: a standalone layer that speaks token ids.

- `engine.Engine`: the decoder (`decoder`, `config`), its paged KV cache (`kv_cache` tensors,
  `blocks` bookkeeping), weight-only quantization (`quant`) and generation (`sampling`,
  `params.SamplingParams`);
- `scheduler.Scheduler`: continuous batching of concurrent requests over one engine, with
  chunked prefill and prefix caching (cached KV blocks reused across requests);
- `apar`: APAR parallel decoding on the same cache;
- `loading.open_checkpoint` with `loaders/` (GGUF, safetensors, pre-quantized folders),
  `tokenizer`, `embedded` (the model files shipped as pip packages);
- `prompt`: prompt text with the spans that are message content (encoded as plain text);
- `errors`: `EngineError` and its subclasses.

It imports nothing from the rest of glm_agent (the runtime's messages, settings and errors live
above it, in `glm_agent.models`, which adapts the engine), and this file imports nothing, so
`import glm_agent.engine` stays free of torch.
"""
