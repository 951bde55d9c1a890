package serve

import (
	"net/http"
	"os"
	"path/filepath"
)

// The chat page's "in this browser" mode runs the model in the page: it
// loads the runtime built for WebAssembly (`make wasm`) from /wasm/ and
// downloads the model file from /v1/models/{model}/file.

// wasmFiles are the only files /wasm/ serves: the runtime and Go's loader
// for it. Nothing else in Config.WasmDir is reachable.
var wasmFiles = map[string]string{
	"wgllm.wasm":   "application/wasm", // instantiateStreaming insists on this type
	"wasm_exec.js": "text/javascript; charset=utf-8",
}

// handleWasm serves GET /wasm/{file} from Config.WasmDir. Like the page it
// needs no API key: it is code, not the model.
func (s *Server) handleWasm(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("file")
	ctype, ok := wasmFiles[name]
	if !ok {
		writeError(w, notFound("no such file: /wasm/%s (only wgllm.wasm and wasm_exec.js are served here)", name))
		return
	}
	if s.cfg.WasmDir == "" {
		writeError(w, notFound("the browser runtime is not served: server.wasm_dir is not set"))
		return
	}
	f, err := os.Open(filepath.Join(s.cfg.WasmDir, name))
	if err != nil {
		reqLog(r).Warn().Err(err).Msg("browser runtime not found")
		writeError(w, notFound("the browser runtime is not built: run `make wasm` (no %s in %s)", name, s.cfg.WasmDir))
		return
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil || st.IsDir() {
		writeError(w, notFound("the browser runtime is not built: run `make wasm` (%s in %s is not a file)", name, s.cfg.WasmDir))
		return
	}
	h := w.Header()
	h.Set("Content-Type", ctype)
	h.Set("Cache-Control", "no-cache") // a rebuilt runtime is picked up at once
	h.Set("X-Content-Type-Options", "nosniff")
	http.ServeContent(w, r, name, st.ModTime(), f)
}

// handleModelFile serves GET /v1/models/{model}/file: the GGUF file of a
// model that Config.ModelFile offers (by default only the default model's),
// for the page to run in the browser. Never a path the client names.
func (s *Server) handleModelFile(w http.ResponseWriter, r *http.Request, b Backend) {
	name := r.PathValue("model")
	lookup := name
	if name == b.ModelName() {
		lookup = "" // the default model
	}
	var path string
	ok := false
	if s.cfg.ModelFile != nil {
		path, ok = s.cfg.ModelFile(lookup)
	}
	if !ok {
		writeError(w, &apiError{Status: http.StatusNotFound, Type: "invalid_request_error", Code: codeModelNotFound,
			Param: "model", Message: "no downloadable file for model " + name + "; this server offers " + b.ModelName() + "'s"})
		return
	}
	f, err := os.Open(path)
	if err != nil {
		reqLog(r).Error().Err(err).Str("model", name).Msg("opening the model file for download")
		writeError(w, &apiError{Status: http.StatusInternalServerError, Type: "server_error", Code: codeInternal,
			Message: "the model file cannot be read"})
		return
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil || st.IsDir() {
		writeError(w, &apiError{Status: http.StatusInternalServerError, Type: "server_error", Code: codeInternal,
			Message: "the model file cannot be read"})
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Content-Disposition", `attachment; filename="`+sanitizeFilename(filepath.Base(path))+`"`)
	h.Set("X-Content-Type-Options", "nosniff")
	// Content-Length (set by ServeContent) lets the page show progress;
	// ranges let a client resume.
	http.ServeContent(w, r, "", st.ModTime(), f)
}

// sanitizeFilename keeps a file name safe inside a quoted header value.
func sanitizeFilename(name string) string {
	out := make([]rune, 0, len(name))
	for _, c := range name {
		if c < 0x20 || c == 0x7f || c == '"' || c == '\\' || c > 0x7e {
			c = '_'
		}
		out = append(out, c)
	}
	return string(out)
}
