package tests

import (
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
)

func TestVersionNamesBuildGoAndWebGPU(t *testing.T) {
	out, errOut, err := wgllm(t, "", "version")
	if err != nil {
		t.Fatalf("%v: %s", err, errOut)
	}
	fields := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		k, v, _ := strings.Cut(line, " ")
		fields[k] = strings.TrimSpace(v)
	}
	for _, k := range []string{"wgllm", "commit", "go", "wgpu-native", "backends"} {
		if fields[k] == "" {
			t.Errorf("no %q line in:\n%s", k, out)
		}
	}
	if want := runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH; fields["go"] != want {
		t.Errorf("go line %q, want %q", fields["go"], want)
	}
	if !strings.Contains(fields["wgpu-native"], "github.com/cogentcore/webgpu v") {
		t.Errorf("wgpu-native line %q does not name the binding's version", fields["wgpu-native"])
	}
	if runtime.GOOS == "linux" && fields["backends"] != "vulkan, gl" {
		t.Errorf("backends on linux %q, want \"vulkan, gl\"", fields["backends"])
	}
}

func TestBackendChoice(t *testing.T) {
	needGPU(t)
	out, errOut, err := wgllm(t, "", "devices", "--backend", "vulkan")
	if err != nil {
		t.Fatalf("--backend vulkan: %v: %s", err, errOut)
	}
	if !strings.Contains(out, "backend                            vulkan") || strings.Contains(out, "open-gl") {
		t.Errorf("--backend vulkan lists other backends' adapters:\n%s", out)
	}
	if !strings.Contains(out, "backend in use: vulkan") {
		t.Errorf("devices does not say vulkan is in use:\n%s", out)
	}
	i := strings.Index(out, "\nbackend ")
	if i < 0 {
		t.Fatalf("no backend table:\n%s", out)
	}
	table := out[i:]
	for _, line := range []string{"vulkan   yes", "metal    no", "dx12     no", "gl       yes"} {
		if runtime.GOOS == "linux" && !strings.Contains(table, line) {
			t.Errorf("backend table lacks %q:\n%s", line, table)
		}
	}

	// A backend Linux's wgpu-native lacks, through the environment: an
	// error naming the ones it has, after the table; no panic.
	cmd := exec.Command(binary, "devices")
	cmd.Env = append(os.Environ(), "WGLLM_BACKEND=metal")
	combined, err := cmd.CombinedOutput()
	if runtime.GOOS == "linux" {
		if err == nil || !strings.Contains(string(combined), `wgllm: GPU backend "metal" is not available on linux: this build of wgpu-native has vulkan, gl`) {
			t.Errorf("WGLLM_BACKEND=metal: err %v, output:\n%s", err, combined)
		}
	}
	if strings.Contains(string(combined), "panic") || strings.Contains(string(combined), "goroutine ") {
		t.Errorf("WGLLM_BACKEND=metal panicked:\n%s", combined)
	}
	if _, errOut, err := wgllm(t, "", "run", "-m", "../models/kjv-30m-q4_k_m.gguf", "-p", "x", "-n", "1", "--backend", "cuda"); err == nil || !strings.Contains(errOut, `unknown GPU backend "cuda"`) {
		t.Errorf("--backend cuda: err %v, stderr %q", err, errOut)
	}
}
