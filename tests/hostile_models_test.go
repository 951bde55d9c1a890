package tests

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wgllm/wgllm/internal/sharedfiles"
	"github.com/wgllm/wgllm/runtime/gguf"
)

// hostileModel is a copy of a good model file with one thing wrong.
type hostileModel struct {
	name   string
	mutate func(meta []gguf.KV, tensors []gguf.TensorToWrite) ([]gguf.KV, []gguf.TensorToWrite)
	cut    float64 // > 0: keep only this fraction of the written file
}

func dropTensor(name string) func([]gguf.KV, []gguf.TensorToWrite) ([]gguf.KV, []gguf.TensorToWrite) {
	return func(meta []gguf.KV, ts []gguf.TensorToWrite) ([]gguf.KV, []gguf.TensorToWrite) {
		out := ts[:0:0]
		for _, t := range ts {
			if t.Name != name {
				out = append(out, t)
			}
		}
		return meta, out
	}
}

func editTensor(name string, edit func(*gguf.TensorToWrite)) func([]gguf.KV, []gguf.TensorToWrite) ([]gguf.KV, []gguf.TensorToWrite) {
	return func(meta []gguf.KV, ts []gguf.TensorToWrite) ([]gguf.KV, []gguf.TensorToWrite) {
		out := append([]gguf.TensorToWrite(nil), ts...)
		for i := range out {
			if out[i].Name == name {
				edit(&out[i])
			}
		}
		return meta, out
	}
}

func setMeta(key string, v any) func([]gguf.KV, []gguf.TensorToWrite) ([]gguf.KV, []gguf.TensorToWrite) {
	return func(meta []gguf.KV, ts []gguf.TensorToWrite) ([]gguf.KV, []gguf.TensorToWrite) {
		out := append([]gguf.KV(nil), meta...)
		for i := range out {
			if out[i].Key == key {
				out[i].Value = gguf.Val(v)
				return out, ts
			}
		}
		return append(out, gguf.KV{Key: key, Value: gguf.Val(v)}), ts
	}
}

// hostileModels break kjv-30m-f16 (8 layers, dim 512, kv dim 256, ffn 1536,
// vocabulary 4096) in the ways a bad conversion or a hostile file would:
// a missing tensor early, in the middle and last, wrong shapes, types the
// loader cannot use, metadata out of range or inconsistent with the
// tensors, a chat template that fails after the weights are uploaded,
// and truncation.
var hostileModels = []hostileModel{
	{name: "missing-first", mutate: dropTensor("token_embd.weight")},
	{name: "missing-middle", mutate: dropTensor("blk.3.attn_q.weight")},
	{name: "missing-last", mutate: dropTensor("blk.7.ffn_down.weight")},
	{name: "shape-swapped", mutate: editTensor("blk.2.ffn_up.weight", func(t *gguf.TensorToWrite) {
		t.Dims = []uint64{t.Dims[1], t.Dims[0]}
	})},
	{name: "shape-3d", mutate: editTensor("blk.5.attn_v.weight", func(t *gguf.TensorToWrite) {
		t.Dims = []uint64{t.Dims[0], t.Dims[1] / 2, 2}
	})},
	{name: "type-unsupported", mutate: editTensor("blk.1.attn_k.weight", func(t *gguf.TensorToWrite) {
		t.Type = gguf.Q8_K // known to GGUF, not to the model
		t.Data = make([]byte, t.Dims[0]*t.Dims[1]/256*292)
	})},
	{name: "type-norm-f16", mutate: editTensor("blk.0.attn_norm.weight", func(t *gguf.TensorToWrite) {
		t.Type = gguf.F16 // norms are F32 in every model this loads
		t.Data = t.Data[:len(t.Data)/2]
	})},
	{name: "meta-block-count-high", mutate: setMeta("llama.block_count", uint32(9))},
	{name: "meta-block-count-huge", mutate: setMeta("llama.block_count", uint32(1<<31-1))},
	{name: "meta-heads-zero", mutate: setMeta("llama.attention.head_count", uint32(0))},
	{name: "meta-dim-mismatch", mutate: setMeta("llama.embedding_length", uint32(1024))},
	{name: "meta-context-huge", mutate: setMeta("llama.context_length", uint32(1<<30))},
	// Refused only once the weights are on the GPU (the chat template is
	// read after the model loads): the load's cleanup runs.
	{name: "template-not-string", mutate: setMeta("tokenizer.chat_template", uint32(7))},
	{name: "template-syntax", mutate: setMeta("tokenizer.chat_template", "{% if %}{{ messages")},
	{name: "truncated-data", cut: 0.6},
	{name: "truncated-header", cut: 0.0001},
}

// writeHostile writes m's file into dir from the good model f.
func writeHostile(t *testing.T, f *gguf.File, dir string, m hostileModel) {
	t.Helper()
	meta := make([]gguf.KV, 0, len(f.Keys))
	for _, k := range f.Keys {
		meta = append(meta, gguf.KV{Key: k, Value: f.Metadata[k]})
	}
	ts := make([]gguf.TensorToWrite, 0, len(f.Tensors))
	for _, ti := range f.Tensors {
		data, err := f.ReadTensor(ti)
		if err != nil {
			t.Fatal(err)
		}
		ts = append(ts, gguf.TensorToWrite{Name: ti.Name, Dims: append([]uint64(nil), ti.Dims...), Type: ti.Type, Data: data})
	}
	if m.mutate != nil {
		meta, ts = m.mutate(meta, ts)
	}
	path := filepath.Join(dir, m.name+".gguf")
	if err := gguf.WriteFile(path, meta, ts); err != nil {
		t.Fatalf("%s: %v", m.name, err)
	}
	if m.cut > 0 {
		st, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(path, max(8, int64(float64(st.Size())*m.cut))); err != nil {
			t.Fatal(err)
		}
	}
}

// TestServeSurvivesHostileModelFiles serves a directory of broken copies of
// kjv-30m beside a good copy, at most two models loaded (so every request
// for the good one after a bad one loads it afresh), and asks for each bad
// model then the good one. Each bad one gets a clean error (404 when the
// catalog already rejects the file, 500 model_load_failed when loading
// fails, or an answer when the loader accepts the file); the good one must
// then give its greedy text. Before gpu.Context.Close flushed pending
// writes, a load that failed after uploading tensors aborted the whole
// process at the next load ("Attempt to use a resource with a different
// device"): with the loader of then, which checked each tensor as it
// uploaded it, at the first good load after missing-middle. The loader now
// checks every tensor before uploading any, so most files stop at the
// catalog; runtime/gpu's TestCloseAfterUnsubmittedWrites reproduces the
// abort itself.
func TestServeSurvivesHostileModelFiles(t *testing.T) {
	needGPU(t)
	goodPath := sharedfiles.File(t, "models/kjv-30m-f16.gguf")
	good, err := gguf.Open(goodPath)
	if err != nil {
		t.Fatal(err)
	}
	defer good.Close()
	dir := t.TempDir()
	for _, m := range hostileModels {
		writeHostile(t, good, dir, m)
	}
	if err := os.Symlink(goodPath, filepath.Join(dir, "good.gguf")); err != nil {
		t.Fatal(err)
	}
	config := filepath.Join(t.TempDir(), "serve.yaml")
	if err := os.WriteFile(config, []byte("models:\n  serve_dir: "+dir+"\n  max_loaded: 2\nengine:\n  max_batch: 1\nmodel:\n  context_length: 128\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	sb := serveBinary(t, nil, "--config", config, "-m", "../models/kjv-30m-q4_k_m.gguf")
	sb.waitHealthy(t)

	generate := func(model string) (int, string) {
		t.Helper()
		body := fmt.Sprintf(`{"model":%q,"prompt":"In the beginning","raw":true,"stream":false,"options":{"num_predict":2,"temperature":0}}`, model)
		client := &http.Client{Timeout: 2 * time.Minute}
		resp, err := client.Post(sb.base+"/api/generate", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatalf("%s: %v (the server died?)\nstderr tail:\n%s", model, err, lastLines(sb.stderr.String(), 20))
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	goodText := func() string {
		t.Helper()
		code, body := generate("good")
		var r struct{ Response string }
		if code != http.StatusOK || json.Unmarshal([]byte(body), &r) != nil || r.Response == "" {
			t.Fatalf("good model: %d %s", code, body)
		}
		return r.Response
	}
	want := goodText()
	outcomes := map[string]int{}
	for _, m := range hostileModels {
		code, body := generate(m.name)
		switch {
		case code == http.StatusNotFound && strings.Contains(body, "model not found"):
			outcomes["rejected by the catalog"]++
		case code == http.StatusInternalServerError && strings.Contains(body, "loading model"):
			outcomes["load failed"]++
		case code == http.StatusOK || code == http.StatusInternalServerError:
			outcomes["loaded"]++ // a file the loader accepts; its output does not matter
		default:
			t.Errorf("%s: %d %s", m.name, code, body)
		}
		t.Logf("%s: %d %.160s", m.name, code, strings.TrimSpace(body))
		if got := goodText(); got != want {
			t.Errorf("after %s the good model says %q, before %q", m.name, got, want)
		}
	}
	t.Logf("outcomes: %v", outcomes)
	if outcomes["load failed"] < 2 {
		t.Errorf("only %d files reached a failing load: the test no longer exercises cleanup after a failed load", outcomes["load failed"])
	}
	if code, _ := sb.getStatus(t, "/health"); code != http.StatusOK {
		t.Errorf("/health %d at the end", code)
	}
}

func (sb *servedBinary) getStatus(t *testing.T, path string) (int, string) {
	t.Helper()
	resp, err := http.Get(sb.base + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestRunGreedyOnNaNModelFails: a model whose output norm is NaN makes every
// logit NaN. `wgllm run --temp 0` printed empty text and exited 0 (the GPU
// argmax still returned an index); now it exits 1 naming the cause, with
// sampling as before.
func TestRunGreedyOnNaNModelFails(t *testing.T) {
	needGPU(t)
	good, err := gguf.Open(sharedfiles.File(t, "models/stories260K.gguf"))
	if err != nil {
		t.Fatal(err)
	}
	defer good.Close()
	dir := t.TempDir()
	writeHostile(t, good, dir, hostileModel{name: "nan", mutate: editTensor("output_norm.weight", func(t *gguf.TensorToWrite) {
		nan := []byte{0x00, 0x00, 0xc0, 0x7f} // f32 NaN, little-endian
		for i := 0; i+4 <= len(t.Data); i += 4 {
			copy(t.Data[i:], nan)
		}
	})})
	for _, temp := range []string{"0", "0.8"} {
		out, errOut, err := wgllm(t, "", "run", "-m", filepath.Join(dir, "nan.gguf"), "-p", "Once", "-n", "4", "--temp", temp)
		if err == nil {
			t.Errorf("--temp %s: exit 0, stdout %q", temp, out)
			continue
		}
		if temp == "0" && !strings.Contains(errOut, "non-finite logits") {
			t.Errorf("--temp 0: stderr does not name the cause: %s", lastLines(errOut, 5))
		}
	}
}
