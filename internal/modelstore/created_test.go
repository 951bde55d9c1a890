package modelstore

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// A created model's manifest round-trips, lists, does not show as a
// store model, and removing it leaves the GGUF file it points at.
func TestCreatedManifests(t *testing.T) {
	s := Store{Dir: t.TempDir()}
	gguf := filepath.Join(s.Dir, "o", "r", "m.gguf")
	if err := os.MkdirAll(filepath.Dir(gguf), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(gguf, []byte("GGUF"), 0o644); err != nil {
		t.Fatal(err)
	}
	c := Created{Name: "team/bible:v1", File: gguf, Template: "{{ messages }}", System: "Be brief.",
		Parameters: map[string]json.RawMessage{"temperature": json.RawMessage(`0.2`)}}
	if err := s.SaveCreated(c); err != nil {
		t.Fatal(err)
	}
	if err := s.SaveCreated(Created{Name: "a", File: gguf}); err != nil {
		t.Fatal(err)
	}
	got, err := s.LoadCreated("team/bible:v1")
	if err != nil || got.System != "Be brief." || string(got.Parameters["temperature"]) != "0.2" || got.File != gguf {
		t.Fatalf("load: %+v %v", got, err)
	}
	list, err := s.ListCreated()
	if err != nil || len(list) != 2 || list[0].Name != "a" || list[1].Name != "team/bible:v1" {
		t.Fatalf("list: %+v %v", list, err)
	}
	models, err := s.List()
	if err != nil || len(models) != 1 || models[0].Name != "o/r:m.gguf" {
		t.Fatalf("store list sees manifests: %+v %v", models, err)
	}
	if err := s.RemoveCreated("team/bible:v1"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.LoadCreated("team/bible:v1"); !errors.Is(err, ErrNotFound) {
		t.Errorf("after remove: %v", err)
	}
	if err := s.RemoveCreated("team/bible:v1"); !errors.Is(err, ErrNotFound) {
		t.Errorf("second remove: %v", err)
	}
	if _, err := os.Stat(gguf); err != nil {
		t.Errorf("the GGUF file went with the manifest: %v", err)
	}
	if err := s.SaveCreated(Created{Name: `x\y`, File: gguf}); err == nil {
		t.Error("a name with a backslash was saved")
	}
}
