// Package web holds the bundled browser chat page: plain HTML, CSS and
// JavaScript with no build step and no external resources, embedded into the
// binary so the page works offline.
//
// The page talks to the server over a websocket at "ws" relative to the page
// (so "/ws" when served at "/"). Protocol, all messages JSON objects with a
// "type" field:
//
//	server → client  {"type":"hello","model":"<model name>"}        on connect
//	client → server  {"type":"chat","id":"r2","messages":[{"role":"system","content":"…"},…],
//	                  "temperature":0.8,"max_tokens":256}
//	client → server  {"type":"cancel","id":"r2"}
//	server → client  {"type":"token","id":"r2","text":"…"}           per piece
//	server → client  {"type":"done","id":"r2","finish_reason":"stop|length|cancelled",
//	                  "usage":{"prompt_tokens":N,"completion_tokens":N},
//	                  "timings":{"ttft_ms":…,"predicted_per_second":…}}
//	server → client  {"type":"error","id":"r2","error":{"code":"…","message":"…"}}
//
// When the user has set an API key in the page's settings, the page sends it
// as the websocket query parameter api_key.
package web

import (
	"embed"
	"io/fs"
	"net/http"
)

// Files holds the page: index.html, app.js, md.js and style.css at the root.
//
//go:embed index.html app.js md.js style.css
var Files embed.FS

// FS returns the page's files with index.html at the root.
func FS() fs.FS { return Files }

// Handler serves the page's files. Responses are marked no-cache (so a new
// binary's page is picked up at once; embedded files carry no modification
// time) and nosniff.
func Handler() http.Handler {
	files := http.FileServerFS(Files)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Cache-Control", "no-cache")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		files.ServeHTTP(w, r)
	})
}
