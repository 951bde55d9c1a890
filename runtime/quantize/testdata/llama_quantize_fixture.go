//go:build ignore

// Command llama_quantize_fixture writes llama-quantize-kjv.json: it runs
// llama.cpp's llama-quantize (no importance matrix) on kjv-30m-f16.gguf for
// each file type and records the output file's and each tensor's sha256,
// so that TestMatchesLlamaQuantizeFixture can compare this package's output
// with llama-quantize's without keeping the files.
//
//	go run runtime/quantize/testdata/llama_quantize_fixture.go LLAMA_QUANTIZE KJV_F16 > runtime/quantize/testdata/llama-quantize-kjv.json
package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/wgllm/wgllm/runtime/gguf"
)

type tensor struct {
	Name   string `json:"name"`
	Type   string `json:"type"`
	SHA256 string `json:"sha256"`
}

type file struct {
	FileType string   `json:"file_type"`
	Command  string   `json:"command"`
	Size     int64    `json:"size"`
	SHA256   string   `json:"sha256"`
	Tensors  []tensor `json:"tensors"`
}

func sum(b []byte) string { h := sha256.Sum256(b); return hex.EncodeToString(h[:]) }

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: llama_quantize_fixture LLAMA_QUANTIZE KJV_F16")
		os.Exit(2)
	}
	bin, src := os.Args[1], os.Args[2]
	dir, err := os.MkdirTemp("", "llama-quantize-fixture")
	check(err)
	defer os.RemoveAll(dir)
	var files []file
	for _, ft := range []string{"IQ4_NL", "IQ4_XS", "MXFP4_MOE"} {
		out := filepath.Join(dir, ft+".gguf")
		cmd := exec.Command(bin, src, out, ft)
		cmd.Stderr = os.Stderr
		check(cmd.Run())
		raw, err := os.ReadFile(out)
		check(err)
		g, err := gguf.Open(out)
		check(err)
		f := file{FileType: ft, Command: "llama-quantize kjv-30m-f16.gguf OUT " + ft, Size: int64(len(raw)), SHA256: sum(raw)}
		for _, ti := range g.Tensors {
			b, err := g.ReadTensor(ti)
			check(err)
			f.Tensors = append(f.Tensors, tensor{ti.Name, ti.Type.String(), sum(b)})
		}
		g.Close()
		files = append(files, f)
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", " ")
	check(enc.Encode(map[string]any{
		"about": "Made by llama.cpp's llama-quantize (the 2026-08 source in ../shared/device/peers, CPU build, " +
			"no importance matrix) from ../shared/models/kjv-30m-f16.gguf; written by llama_quantize_fixture.go.",
		"files": files,
	}))
}

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
