// Package wgsl holds the compute shaders as text/template sources. The Go
// binding cannot set pipeline override constants, so specialisation values
// (workgroup size, dtype, head size) are written into the text.
package wgsl

import (
	"bytes"
	"embed"
	"fmt"
	"strings"
	"sync"
	"text/template"
)

//go:embed *.wgsl
var files embed.FS

var (
	mu     sync.Mutex
	parsed = map[string]*template.Template{}
)

// Render fills the holes of the named shader file ("rmsnorm.wgsl") with data.
func Render(name string, data any) (string, error) {
	mu.Lock()
	t, ok := parsed[name]
	if !ok {
		src, err := files.ReadFile(name)
		if err != nil {
			mu.Unlock()
			return "", fmt.Errorf("wgsl: no shader %q", name)
		}
		common, _ := files.ReadFile("common.wgsl")
		t, err = template.New(name).Option("missingkey=error").Parse(string(common) + "\n" + string(src))
		if err == nil {
			err = parseIncludes(t)
		}
		if err != nil {
			mu.Unlock()
			return "", fmt.Errorf("wgsl: parsing %s: %w", name, err)
		}
		parsed[name] = t
	}
	mu.Unlock()
	var b bytes.Buffer
	if err := t.Execute(&b, data); err != nil {
		return "", fmt.Errorf("wgsl: rendering %s: %w", name, err)
	}
	return b.String(), nil
}

// parseIncludes adds the *.inc.wgsl files to t: they hold only {{define}}
// blocks that several shaders share (blocks.inc.wgsl: the quantised block
// decoders), called with {{template "name" .}}.
func parseIncludes(t *template.Template) error {
	ents, _ := files.ReadDir(".")
	for _, e := range ents {
		if !isInclude(e.Name()) {
			continue
		}
		src, _ := files.ReadFile(e.Name())
		if _, err := t.New(e.Name()).Parse(string(src)); err != nil {
			return err
		}
	}
	return nil
}

func isInclude(name string) bool { return strings.HasSuffix(name, ".inc.wgsl") }

// Names lists the shader files (for tests that compile every one).
func Names() []string {
	ents, _ := files.ReadDir(".")
	var out []string
	for _, e := range ents {
		if e.Name() != "common.wgsl" && !isInclude(e.Name()) {
			out = append(out, e.Name())
		}
	}
	return out
}
