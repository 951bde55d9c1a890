// Package serve is wgllm's network front: a websocket protocol for the
// browser chat page, an OpenAI-compatible HTTP API, request status
// endpoints, health and Prometheus metrics. It drives the engine through
// the Backend interface and knows nothing of GPUs.
//
// # Endpoints
//
//	GET    /                      the static chat page (Config.Static), index.html at /
//	GET    /health                503 {"status":"loading"} until SetBackend, then 200 {"status":"ok","model":…}
//	                              (503 {"status":"unavailable","error":…} while a HealthReporter backend says so)
//	GET    /metrics               Prometheus text format
//	GET    /wasm/{file}           wgllm.wasm and wasm_exec.js from Config.WasmDir (make wasm)
//	GET    /ws                    websocket (below)
//	POST   /v1/chat/completions   OpenAI chat; "stream": true for server-sent events
//	POST   /v1/completions        OpenAI completions; "stream": true likewise
//	POST   /v1/embeddings         OpenAI embeddings (below)
//	GET    /v1/models             {"object":"list","data":[{"id":…,"object":"model",…}]}
//	GET    /v1/models/{model}     the model, or 404
//	GET    /v1/models/{model}/file  the model's GGUF file, when Config.ModelFile offers it
//	                              (the page's "in this browser" mode downloads it)
//	POST   /v1/requests           a completions or chat body; 202 {"id":…,"status":"queued"}
//	GET    /v1/requests/{id}      engine.Status: {"id","status","text",…}; 404 if unknown
//	DELETE /v1/requests/{id}      cancel; answers the final engine.Status; 404 if unknown
//	POST   /api/generate          Ollama: a prompt (templated unless "raw"); NDJSON stream unless "stream": false
//	POST   /api/chat              Ollama: messages; NDJSON stream unless "stream": false
//	POST   /api/embed             Ollama: embeddings of "input" (a string or strings), unit vectors
//	POST   /api/embeddings        Ollama's older endpoint: the embedding of "prompt", not normalised
//	GET    /api/tags              Ollama: the models that can be served
//	GET    /api/ps                Ollama: the models loaded now
//	POST   /api/show              Ollama: a model's details, metadata, template and default parameters
//	GET    /api/version           Ollama: {"version":…}, the Ollama API release these endpoints follow
//	POST   /api/pull              Ollama: download REPO[:FILE|:TAG] into the model store (Config.Manager); NDJSON progress
//	DELETE /api/delete            Ollama: remove a model from the store (not the default; a created model's manifest, never its file)
//	POST   /api/copy              Ollama: {"source","destination"}: the source under a new name (a ModelCreator)
//	POST   /api/create            Ollama: {"model","from","template","system","parameters"}: a named model over a
//	                              GGUF file ("from": a model or a file's absolute path on the server, not copied)
//	                              with its own chat template, system prompt (for chats without one) and
//	                              parameters (request defaults under the request's own); NDJSON status lines
//	POST   /tokenize              llama.cpp: {"content","add_special","with_pieces"} → {"tokens":[…]}
//	POST   /detokenize            llama.cpp: {"tokens":[…]} → {"content":…}
//	GET    /props                 the model, its context (n_ctx) and max_tokens_limit (the chat page reads it)
//
// # Several models
//
// A Backend that is a Router (Registry) serves several models: a
// request's "model" names one (no name: the default; Ollama's ":latest"
// tag may be added), which is loaded on demand within a GPU memory budget,
// evicting the least recently used idle model (never the default, never
// one with requests in flight) to make room. Loading one model never
// delays requests to another. An unknown model is 404 (code
// model_not_found), a model larger than the budget 507, no room within
// RegistryOptions.LoadWait because the other models are busy 503, a
// failed load 500 (model_load_failed). The websocket serves the default
// model. With a plain Backend the request's "model" is not checked (one
// model is served).
//
// # Ollama API
//
// Shapes follow Ollama's API documentation: durations in nanoseconds, the
// final line (or the one object with "stream": false) carries done,
// done_reason, total_duration, load_duration (the time the request waited
// for its model to load), prompt_eval_count, prompt_eval_duration,
// eval_count and eval_duration; errors are {"error":"…"} with the same
// statuses as /v1, and a stream that fails ends with such a line.
// "options" map onto the sampling fields above (num_predict is
// max_tokens, -1 meaning Config.MaxTokensLimit; repeat_last_n -1 is the
// largest window); options that set how Ollama loads a model (num_ctx,
// num_gpu, …) and the samplers this server lacks (typical_p, tfs_z,
// mirostat) are accepted and ignored with a warning in the log, as are
// unknown options. Absent options take the server's defaults, not
// Ollama's. An empty prompt (or no messages) loads the model
// (done_reason "load"); with keep_alive 0 it unloads it if it is idle and
// not the default ("unload"). think: true splits a reasoning model's
// <think> text into "thinking" (400 where the template has no thinking),
// false asks the template not to think and drops what thinking comes,
// absent leaves it in the text (gpt-oss's reasoning, in a channel of its
// own, is split out then too); a level ("low", "medium", "high") is also
// the template's reasoning_effort. A message's thinking reaches the
// template. tools and message.tool_calls (arguments
// objects) work as OpenAI's below; calls come back in message.tool_calls.
// With one model served, a name other than its own is 404 (Ollama's
// clients probe with it). format ("json" or a JSON schema) and
// logprobs/top_logprobs work as below. Refused with 400: images, suffix,
// context, template. The API key and CORS settings of /v1 apply to /api.
//
// # Tool calling and reasoning
//
// tools (function definitions whose parameters must be a JSON schema),
// tool_choice (auto, none, required, {"type":"function","function":
// {"name":…}}) and parallel_tool_calls reach the model's own chat
// template (tools, and each message's tool_calls, tool_call_id, name);
// the template tells the family's call format (chat.Format: Hermes/Qwen
// <tool_call>, Llama 3 JSON, Mistral [TOOL_CALLS], gpt-oss's harmony
// channels), and the output is
// parsed as it streams (chat.OutputParser): calls come back as
// message.tool_calls, streamed as OpenAI does (a delta with index, id,
// type and name, then one with the arguments), finish_reason
// "tool_calls". With required or a named function the answer starts with
// the format's opening of a call and a grammar of the call's JSON
// (runtime/grammar) constrains the rest, so it is always a valid call;
// a tool schema the grammar cannot enforce falls back to checking after
// the fact (500 invalid_tool_call when the output is no call). A tool
// message must answer an earlier call's id. A template without tool
// support refuses tools (400). <think>…</think> (or a prompt the
// template left inside <think>), or gpt-oss's analysis channel, becomes
// reasoning_content; an assistant message's reasoning_content goes back
// to the template (as reasoning_content and thinking), and
// reasoning_effort (low, medium, high) is the template's. A prompt
// over the model's context is 400 context_length_exceeded.
//
// Errors are OpenAI's shape, {"error":{"message","type","param","code"}},
// with 400 (invalid request or parameter), 401 (missing or wrong API
// key), 404, 405, 413 (body over Config.MaxBodyBytes or prompt over
// Config.MaxPromptBytes), 429 (the engine's queue is full; Retry-After)
// and 503 (model loading or shutting down).
//
// Sampling fields, in every request kind: temperature (≥ 0; 0 is greedy),
// top_p (0, 1], top_k (≥ 0), min_p [0, 1], max_tokens (or
// max_completion_tokens) in [1, Config.MaxTokensLimit], seed (≥ 0; absent
// or -1: random), stop (string or up to 16 strings), presence_penalty and
// frequency_penalty [-2, 2], repeat_penalty (0, 10], repeat_last_n. Absent
// fields take Config.DefaultSampling and Config.DefaultMaxTokens. The
// request's "model" picks the model (see Several models). best_of other
// than 1 and echo are refused (400), and so are functions, function_call
// and suffix unless neutral (null, false, empty, "none"/"auto"): ignoring
// them would silently change the answer. Other unknown fields are ignored, as OpenAI clients send
// many. A body (or websocket message) that is not valid UTF-8 is refused
// (400 invalid_json) rather than read with replacement characters.
//
// # Structured output, logprobs, choices, embeddings
//
// response_format {"type":"json_object"} and {"type":"json_schema",
// "json_schema":{"schema":…}} (chat, completions, the websocket) and
// Ollama's format ("json" or a schema) compile into a grammar
// (runtime/grammar) that constrains sampling, greedy too: the answer
// always parses, and validates against the schema, also within a tight
// max_tokens (the grammar steers towards its end as the budget runs out).
// A schema that cannot be compiled, or uses a keyword whose constraint
// the grammar cannot express (pattern, numeric bounds other than minimum
// 0, uniqueItems, …), is a 400 naming the field
// (response_format.json_schema.schema, format) and the place in the
// schema. json_object or json_schema with tools is refused.
//
// logprobs: chat takes logprobs: true and top_logprobs 0..20 and answers
// choices[].logprobs.content [{token, logprob, bytes, top_logprobs}] (in
// every streamed chunk for its tokens); completions take logprobs N and
// answer tokens, token_logprobs, top_logprobs and text_offset; Ollama
// takes logprobs and top_logprobs and answers "logprobs" on each line.
// They are the model's own distribution (softmax of the raw logits).
// logit_bias maps token ids (strings) to -100..100, added to the logits.
//
// n (1..8) gives n choices of one prompt, seeds seed, seed+1, …; they are
// submitted together, so the engine prefills the prompt once and forks its
// KV blocks for the others; usage counts the prompt once. The websocket
// takes one choice per request.
//
// Embeddings (/v1/embeddings, /api/embed, /api/embeddings) pool the
// model's final hidden states as its GGUF pooling_type says (last when
// absent, as llama.cpp); input is a string, strings, token ids or arrays
// of token ids (OpenAI), up to 2048 inputs; encoding_format float or
// base64. An input over the context is a 400 naming input
// (context_length_exceeded), except that Ollama's /api/embed truncates
// unless "truncate": false.
//
// # Websocket protocol
//
// JSON text messages. On connecting the server sends
//
//	{"type":"hello","model":"…"}
//
// The client starts requests, any number in flight (up to
// Config.WSMaxInFlight), told apart by its own "id" (unique among its
// requests in flight on that connection):
//
//	{"type":"generate","id":"r1","prompt":"…","max_tokens":32,"temperature":0,…}
//	{"type":"chat","id":"r2","messages":[{"role":"user","content":"…"}],…}
//	{"type":"cancel","id":"r1"}
//
// and gets, per request, pieces of text then one end:
//
//	{"type":"token","id":"r1","text":"…"}
//	{"type":"reasoning","id":"r1","text":"…"}       (a reasoning model's <think> text)
//	{"type":"tool_call","id":"r1","call":{"id":"call_…","name":"…","arguments":{…}}}   (with "tools")
//	{"type":"done","id":"r1","finish_reason":"stop|length|cancelled","usage":{"prompt_tokens":N,"completion_tokens":N,"cached_tokens":N},"timings":{…}}
//	{"type":"error","id":"r1","error":{"code":"…","message":"…"}}
//
// A cancel is answered by the request's "done" with finish_reason
// "cancelled". A malformed message, an unknown type, a duplicate id or an
// invalid parameter gets an "error" (without "id" when none could be
// read) and the connection stays usable. A message over Config.WSReadLimit
// closes the connection with code 1009. The server pings every
// Config.WSPingInterval and drops a client silent for twice that. Each
// connection has a bounded outgoing queue (Config.WSSendQueue messages): a
// client too slow to drain it has its requests cancelled and is closed
// with code 1008, so it never stalls the engine or other clients. A
// closed connection cancels its requests.
//
// Error codes: invalid_json, invalid_request, invalid_parameter,
// unsupported_parameter, unknown_type, duplicate_id, not_found,
// prompt_too_large, too_many_in_flight, too_many_connections (429 on the
// upgrade, beyond Config.WSMaxConnections), server_busy, model_loading,
// shutting_down, generation_failed, internal_error.
//
// # Safety
//
// The default address is 127.0.0.1:8080 (loopback only). With
// Config.APIKey set, /v1/* (including /v1/requests) and /ws require
// "Authorization: Bearer <key>", compared in constant time. Browsers
// cannot set headers on a websocket, so /ws also accepts the key as
//
//   - a subprotocol: new WebSocket(url, ["wgllm", "bearer." + key]); the
//     server selects "wgllm" (offer it: browsers fail a handshake whose
//     offered subprotocols were all declined) and never echoes the key; or
//   - a query parameter: /ws?api_key=<key> (simplest, but URLs end up in
//     histories and proxy logs; the server logs paths without queries).
//
// The websocket accepts requests without an Origin header (non-browser
// clients), from its own origin (Origin's host equal to Host) and from
// Config.AllowedOrigins; other origins get 403. CORS headers for /v1 are
// sent only for Config.CORSOrigins (none by default). Bodies, prompts,
// websocket messages, sampling values and per-connection concurrency are
// bounded; every write has a deadline (Config.WriteTimeout).
//
// Logs are zerolog lines; every line about a request carries its
// request_id (also returned as the X-Request-Id header); lines about a
// generation also carry job_id (HTTP) or conn_id and client_id
// (websocket, where request_id is the job's id).
package serve
