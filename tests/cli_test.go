// Package tests holds end-to-end tests that run the real wgllm binary.
package tests

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/wgllm/wgllm/internal/sharedfiles"
	"github.com/wgllm/wgllm/runtime/gpu"
)

var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "wgllm-e2e")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "wgllm")
	if prebuilt := os.Getenv("WGLLM_TEST_BINARY"); prebuilt != "" {
		// A machine without the Go toolchain (the GPU machine) runs a
		// prebuilt test binary against a prebuilt wgllm.
		binary = prebuilt
	} else {
		build := exec.Command("go", "build", "-o", binary, "../cmd/wgllm")
		build.Stderr = os.Stderr
		if err := build.Run(); err != nil {
			panic("building wgllm: " + err.Error())
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func needGPU(t *testing.T) {
	t.Helper()
	if _, _, err := gpu.ListAdapters(gpu.Options{}); errors.Is(err, gpu.ErrNoAdapter) {
		t.Skipf("no WebGPU adapter: %v", err)
	}
}

// wgllm runs the binary and returns stdout and stderr separately.
func wgllm(t *testing.T, stdin string, args ...string) (string, string, error) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.Stdin = strings.NewReader(stdin)
	err := cmd.Run()
	return out.String(), errb.String(), err
}

func TestDevicesListsAndMarksTheChosenAdapter(t *testing.T) {
	needGPU(t)
	out, _, err := wgllm(t, "", "devices")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "* 0") || !strings.Contains(out, "maxStorageBufferBindingSize") || !strings.Contains(out, "shader-f16") {
		t.Fatalf("devices output:\n%s", out)
	}
	if _, errOut, err := wgllm(t, "", "devices", "--adapter", "no-such-gpu"); err == nil || !strings.Contains(errOut, "no-such-gpu") {
		t.Fatalf("unknown adapter: err %v, stderr %q", err, errOut)
	}
}

func TestRunPrintsOnlyTheContinuation(t *testing.T) {
	needGPU(t)
	model := sharedfiles.File(t, "models/kjv-30m-f16.gguf")
	out, errOut, err := wgllm(t, "", "run", "-m", model, "-p", "In the beginning God created", "-n", "41", "--temp", "0")
	if err != nil {
		t.Fatalf("%v\n%s", err, errOut)
	}
	want := " it; and it was made in the end of the doctors.\nAnd the LORD God said, Who shall go out with us? and when he said, Ye shall be holy.\n\n"
	if out != want { // the continuation, then the newline run adds at the end
		t.Fatalf("stdout:\n%q\nwant\n%q", out, want)
	}
	if !strings.Contains(errOut, `"message":"done"`) {
		t.Errorf("no structured log on stderr: %q", errOut)
	}
}

func TestTokenizeFormat(t *testing.T) {
	model := sharedfiles.File(t, "models/kjv-30m-f16.gguf")
	out, _, err := wgllm(t, "", "tokenize", "-m", model, "In the beginning God created")
	if err != nil || out != "1 1050 261 2051 391 3372\n" {
		t.Fatalf("tokenize: %q, %v", out, err)
	}
	out, _, err = wgllm(t, "In the beginning God created", "tokenize", "-m", model, "--no-bos", "--stdin")
	if err != nil || out != "1050 261 2051 391 3372\n" {
		t.Fatalf("tokenize --no-bos --stdin: %q, %v", out, err)
	}
}

func TestPerplexityLastLine(t *testing.T) {
	needGPU(t)
	model := sharedfiles.File(t, "models/kjv-30m-q4_0.gguf")
	text := sharedfiles.File(t, "testdata/eval/kjv-eval.txt")
	out, errOut, err := wgllm(t, "", "perplexity", "-m", model, "-f", text, "-c", "128")
	if err != nil {
		t.Fatalf("%v\n%s", err, errOut)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	last := lines[len(lines)-1]
	if !regexp.MustCompile(`^Final estimate: PPL = 5\.[45]\d{3} \+/- \d+\.\d{5}$`).MatchString(last) {
		t.Fatalf("last line %q", last)
	}
}

func TestInfoAndBadModels(t *testing.T) {
	out, _, err := wgllm(t, "", "info", "-m", "../models/kjv-30m-q4_k_m.gguf")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"architecture", "llama", "Q4_K", "Q6_K", "gpu memory", "kv cache"} {
		if !strings.Contains(out, want) {
			t.Errorf("info lacks %q:\n%s", want, out)
		}
	}
	bad := filepath.Join(t.TempDir(), "bad.gguf")
	os.WriteFile(bad, []byte("GGUF\x03\x00\x00\x00garbage"), 0o644)
	for _, args := range [][]string{{"info", "-m", bad}, {"run", "-m", bad, "-p", "x"}, {"run", "-m", "/no/such/file.gguf", "-p", "x"}} {
		_, errOut, err := wgllm(t, "", args...)
		if err == nil || !strings.HasPrefix(errOut, "wgllm: ") || strings.Contains(errOut, "panic") {
			t.Errorf("%v: err %v, stderr %q", args, err, errOut)
		}
	}
}

// TestBenchParallel: bench --parallel prints one llama-batched-bench row per
// sequence count, in its table and as JSON, and refuses a bad list.
func TestBenchParallel(t *testing.T) {
	needGPU(t)
	out, errOut, err := wgllm(t, "", "bench", "-m", "../models/kjv-30m-q4_k_m.gguf", "--parallel", "1,3", "-p", "5", "-n", "2", "--json")
	if err != nil {
		t.Fatalf("%v\n%s", err, errOut)
	}
	var raw []map[string]any
	if err := json.Unmarshal([]byte(out), &raw); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if len(raw) != 2 {
		t.Fatalf("%d rows, want 2: %s", len(raw), out)
	}
	for i, pl := range []float64{1, 3} {
		r := raw[i]
		if r["pl"] != pl || r["pp"] != 5.0 || r["tg"] != 2.0 || r["n_kv"] != pl*7 {
			t.Errorf("row %d: %v", i, r)
		}
		for _, k := range []string{"speed_pp", "speed_tg", "speed", "t_pp", "t_tg", "t"} {
			if v, ok := r[k].(float64); !ok || v <= 0 {
				t.Errorf("row %d: %s = %v", i, k, r[k])
			}
		}
		if got, want := r["t"].(float64), r["t_pp"].(float64)+r["t_tg"].(float64); got-want > 1e-9 || want-got > 1e-9 {
			t.Errorf("row %d: t %v != t_pp + t_tg %v", i, got, want)
		}
	}
	out, _, err = wgllm(t, "", "bench", "-m", "../models/kjv-30m-q4_k_m.gguf", "--parallel", "2", "-p", "3", "-n", "1")
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`\|\s+PP \|\s+TG \|\s+B \|\s+N_KV \|\s+T_PP s \| S_PP t/s \|\s+T_TG s \| S_TG t/s \|\s+T s \|\s+S t/s \|\n\|-+`).MatchString(out) ||
		!regexp.MustCompile(`\|\s+3 \|\s+1 \|\s+2 \|\s+8 \|`).MatchString(out) {
		t.Errorf("table:\n%s", out)
	}
	for _, bad := range []string{"0", "1,x", "5000"} {
		_, errOut, err := wgllm(t, "", "bench", "-m", "../models/kjv-30m-q4_k_m.gguf", "--parallel="+bad)
		if err == nil || !strings.Contains(errOut, "--parallel") || strings.Contains(errOut, "panic") {
			t.Errorf("--parallel %q: err %v, stderr %q", bad, err, errOut)
		}
	}
}

// info prints the KV cache type and bytes per token of kv.dtype
// (kjv-30m: 8 layers × 256 K and V values a token), and refuses an unknown
// type.
func TestInfoKVCacheBytes(t *testing.T) {
	for dtype, want := range map[string]string{"f16": "f16, 8192 bytes per token", "q8_0": "q8_0, 4352 bytes per token", "f32": "f32, 16384 bytes per token"} {
		t.Run(dtype, func(t *testing.T) {
			t.Setenv("WGLLM_KV_DTYPE", dtype)
			out, errOut, err := wgllm(t, "", "info", "-m", "../models/kjv-30m-q4_k_m.gguf")
			if err != nil {
				t.Fatalf("%v\n%s", err, errOut)
			}
			if !regexp.MustCompile(`kv cache +` + want).MatchString(out) {
				t.Errorf("info lacks %q:\n%s", want, out)
			}
		})
	}
	t.Setenv("WGLLM_KV_DTYPE", "q4_0")
	if _, errOut, err := wgllm(t, "", "info", "-m", "../models/kjv-30m-q4_k_m.gguf"); err == nil || !strings.Contains(errOut, `kv.dtype "q4_0"`) {
		t.Errorf("kv.dtype q4_0: err %v, stderr %q", err, errOut)
	}
}
