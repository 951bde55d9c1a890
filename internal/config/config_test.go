package config

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/spf13/pflag"
)

func TestLayering(t *testing.T) {
	v, err := Load("", nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := v.GetString("server.addr"); got != "127.0.0.1:8080" {
		t.Fatalf("default server.addr %q", got)
	}
	file := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(file, []byte("server:\n  addr: 127.0.0.1:9000\nkv:\n  dtype: f32\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	v, err = Load(file, nil)
	if err != nil {
		t.Fatal(err)
	}
	if v.GetString("server.addr") != "127.0.0.1:9000" || v.GetString("kv.dtype") != "f32" || v.GetString("log.level") != "info" {
		t.Fatalf("file layer: addr %q dtype %q level %q", v.GetString("server.addr"), v.GetString("kv.dtype"), v.GetString("log.level"))
	}
	t.Setenv("WGLLM_SERVER_ADDR", "127.0.0.1:9100")
	t.Setenv("WGLLM_ADAPTER", "nvidia")
	t.Setenv("WGLLM_BACKEND", "dx12")
	v, _ = Load(file, nil)
	if v.GetString("server.addr") != "127.0.0.1:9100" || v.GetString("gpu.adapter") != "nvidia" || v.GetString("gpu.backend") != "dx12" {
		t.Fatalf("environment layer: addr %q adapter %q backend %q", v.GetString("server.addr"), v.GetString("gpu.adapter"), v.GetString("gpu.backend"))
	}
	fs := pflag.NewFlagSet("x", pflag.ContinueOnError)
	fs.String("addr", "", "")
	if err := fs.Parse([]string{"--addr", "0.0.0.0:1"}); err != nil {
		t.Fatal(err)
	}
	v, _ = Load(file, map[string]*pflag.Flag{"server.addr": fs.Lookup("addr")})
	if v.GetString("server.addr") != "0.0.0.0:1" {
		t.Fatalf("flag layer: %q", v.GetString("server.addr"))
	}
	if _, err := Load(filepath.Join(t.TempDir(), "missing.yaml"), nil); err == nil {
		t.Error("missing config file accepted")
	}
}
