package main

import (
	"bytes"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"

	"github.com/wgllm/wgllm/runtime/chat"
)

func TestTurnReader(t *testing.T) {
	in := "hello\r\n  \"\"\"one line\"\"\"\n\"\"\"\nfirst\n\n  second\n\"\"\"\n\"\"\"opened\nclosed here\"\"\"\nlast without newline"
	var prompts bytes.Buffer
	r := newTurnReader(strings.NewReader(in), &prompts)
	var got []string
	for {
		s, err := r.next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, s)
	}
	want := []string{"hello", "one line", "first\n\n  second", "opened\nclosed here", "last without newline"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("turns %q, want %q", got, want)
	}
	if p := prompts.String(); strings.Count(p, ">>> ") != 6 || strings.Count(p, "... ") != 5 {
		t.Errorf("prompts %q: want one >>> a turn (and at the end), ... a continued line", p)
	}
}

// A message of several lines left open at the end of the input is sent.
func TestTurnReaderUnclosed(t *testing.T) {
	r := newTurnReader(strings.NewReader("\"\"\"a\nb\n"), nil)
	if s, err := r.next(); s != "a\nb" || err != nil {
		t.Errorf("got %q, %v", s, err)
	}
	if _, err := r.next(); !errors.Is(err, io.EOF) {
		t.Errorf("then %v, want EOF", err)
	}
}

func TestChatCommands(t *testing.T) {
	var msgs bytes.Buffer
	s := &chatSession{thinkOut: &msgs, system: "old"}
	s.history = []chat.Message{{Role: "user", Content: "hi"}, {Role: "assistant", Content: "hello"}}
	for _, c := range []struct {
		line   string
		quit   bool
		system string
		turns  int
	}{
		{"/set system  be brief ", false, "be brief", 2},
		{"/set nothing", false, "be brief", 2},
		{"/clear", false, "be brief", 0},
		{"/set system", false, "", 0},
		{"/?", false, "", 0},
		{"/bye", true, "", 0},
	} {
		if quit := s.command(c.line); quit != c.quit || s.system != c.system || len(s.history) != c.turns {
			t.Errorf("%q: quit %v, system %q, %d messages; want %v, %q, %d", c.line, quit, s.system, len(s.history), c.quit, c.system, c.turns)
		}
	}
	if !strings.Contains(msgs.String(), "Usage: /set system TEXT") || !strings.Contains(msgs.String(), "/clear") {
		t.Errorf("messages %q", msgs.String())
	}
}
