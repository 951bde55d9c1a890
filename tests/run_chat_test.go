package tests

import (
	"bufio"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wgllm/wgllm/internal/ggufedit"
	"github.com/wgllm/wgllm/internal/sharedfiles"
)

// chatLog is what `wgllm run` logs of each chat turn at debug level.
type chatLog struct {
	prompts []string  // "chat prompt": the rendered prompt of each turn
	replies []chatEnd // "reply done"
	warns   []string
}

type chatEnd struct {
	PromptTokens     int    `json:"prompt_tokens"`
	CachedTokens     int    `json:"cached_tokens"`
	CompletionTokens int    `json:"completion_tokens"`
	FinishReason     string `json:"finish_reason"`
}

func parseChatLog(t *testing.T, stderr string) chatLog {
	t.Helper()
	var l chatLog
	for _, line := range strings.Split(stderr, "\n") {
		if !strings.HasPrefix(line, "{") {
			continue
		}
		var rec struct {
			Level, Message, Prompt string
		}
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		switch {
		case rec.Message == "chat prompt":
			l.prompts = append(l.prompts, rec.Prompt)
		case rec.Message == "reply done":
			var e chatEnd
			if err := json.Unmarshal([]byte(line), &e); err != nil {
				t.Fatal(err)
			}
			l.replies = append(l.replies, e)
		case rec.Level == "warn":
			l.warns = append(l.warns, rec.Message)
		}
	}
	return l
}

// chatRun runs `wgllm run` greedily with debug JSON logs.
func chatRun(t *testing.T, stdin, model string, args ...string) (string, string, chatLog) {
	t.Helper()
	args = append([]string{"run", "-m", model, "--temp", "0", "--log-level", "debug", "--log-format", "json"}, args...)
	out, errOut, err := wgllm(t, stdin, args...)
	if err != nil {
		t.Fatalf("wgllm %v: %v\n%s", args, err, errOut)
	}
	return out, errOut, parseChatLog(t, errOut)
}

const kjvF16 = "models/kjv-30m-f16.gguf"

// A model without a chat template chats in ChatML (with a warning); the
// second turn's prompt is the first turn's with the reply and the new
// turn, and its KV comes from the cache; the end of stdin ends the chat.
func TestRunChatKeepsTheConversation(t *testing.T) {
	needGPU(t)
	model := sharedfiles.File(t, kjvF16)
	out, _, l := chatRun(t, "In the beginning\nAnd God said\n", model, "-i", "-n", "6")
	replies := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(l.prompts) != 2 || len(l.replies) != 2 || len(replies) != 2 {
		t.Fatalf("prompts %q, replies %+v, stdout %q: want two turns", l.prompts, l.replies, out)
	}
	if len(l.warns) == 0 || !strings.Contains(strings.Join(l.warns, "\n"), "no chat template") {
		t.Errorf("no warning of the missing template: %q", l.warns)
	}
	want0 := "<|im_start|>user\nIn the beginning<|im_end|>\n<|im_start|>assistant\n"
	if l.prompts[0] != want0 {
		t.Errorf("first prompt %q, want %q", l.prompts[0], want0)
	}
	want1 := want0 + replies[0] + "<|im_end|>\n<|im_start|>user\nAnd God said<|im_end|>\n<|im_start|>assistant\n"
	if l.prompts[1] != want1 {
		t.Errorf("second prompt %q, want %q", l.prompts[1], want1)
	}
	for i, r := range l.replies {
		if r.CompletionTokens != 6 || r.FinishReason != "length" {
			t.Errorf("reply %d: %+v, want 6 tokens and length", i, r)
		}
	}
	// The first prompt and all but the last token of the reply (never fed
	// back) are cached.
	if got, want := l.replies[1].CachedTokens, l.replies[0].PromptTokens+l.replies[0].CompletionTokens-1; got < l.replies[0].PromptTokens || got > want {
		t.Errorf("second turn cached %d tokens, want %d..%d (the first turn)", got, l.replies[0].PromptTokens, want)
	}
}

func TestRunChatCommands(t *testing.T) {
	needGPU(t)
	model := sharedfiles.File(t, kjvF16)
	in := "hello\n/set system Speak as the KJV\nagain\n/clear\n\"\"\"\nline one\nline two\n\"\"\"\n/?\n/nope\n/bye\nnever sent\n"
	out, errOut, l := chatRun(t, in, model, "-i", "-n", "2", "--system", "From the flag")
	if len(l.prompts) != 3 || strings.Count(out, "\n") != 3 {
		t.Fatalf("prompts %q, stdout %q: want three turns (none after /bye)", l.prompts, out)
	}
	sys := func(s string) string { return "<|im_start|>system\n" + s + "<|im_end|>\n" }
	if !strings.HasPrefix(l.prompts[0], sys("From the flag")+"<|im_start|>user\nhello<|im_end|>") {
		t.Errorf("turn 1 (--system): %q", l.prompts[0])
	}
	if p := l.prompts[1]; !strings.HasPrefix(p, sys("Speak as the KJV")+"<|im_start|>user\nhello<|im_end|>") || !strings.Contains(p, "user\nagain<|im_end|>") {
		t.Errorf("turn 2 (/set system, history kept): %q", p)
	}
	if p := l.prompts[2]; p != sys("Speak as the KJV")+"<|im_start|>user\nline one\nline two<|im_end|>\n<|im_start|>assistant\n" {
		t.Errorf("turn 3 (/clear, a message of two lines): %q", p)
	}
	for _, want := range []string{"Set the system prompt.", "Cleared the conversation.", "/set system TEXT", `Unknown command "/nope"`} {
		if !strings.Contains(errOut, want) {
			t.Errorf("stderr lacks %q", want)
		}
	}
}

// --chat -p and a piped stdin are one chat turn; -p alone stays a raw
// continuation (TestRunPrintsOnlyTheContinuation).
func TestRunChatOneTurn(t *testing.T) {
	needGPU(t)
	model := sharedfiles.File(t, kjvF16)
	byFlag, _, lf := chatRun(t, "", model, "--chat", "-p", "In the beginning", "-n", "5")
	piped, _, lp := chatRun(t, "In the beginning\n", model, "-n", "5")
	if byFlag != piped || strings.Count(byFlag, "\n") != 1 || len(strings.TrimSpace(byFlag)) == 0 {
		t.Errorf("--chat -p %q and piped %q: want the same one-line greedy reply", byFlag, piped)
	}
	for _, l := range []chatLog{lf, lp} {
		if len(l.prompts) != 1 || l.prompts[0] != "<|im_start|>user\nIn the beginning<|im_end|>\n<|im_start|>assistant\n" {
			t.Errorf("prompts %q: want the one rendered turn", l.prompts)
		}
	}
	// The reply is the raw continuation of the rendered prompt.
	raw, errOut, err := wgllm(t, "", "run", "-m", model, "--temp", "0", "-n", "5", "-p", lf.prompts[0])
	if err != nil {
		t.Fatalf("%v\n%s", err, errOut)
	}
	if raw != byFlag {
		t.Errorf("raw continuation %q, chat reply %q", raw, byFlag)
	}
	if _, errOut, err := wgllm(t, " \n", "run", "-m", model); err == nil || !strings.Contains(errOut, "stdin was empty") {
		t.Errorf("empty stdin: err %v, stderr %q", err, errOut)
	}
}

const thinkTemplate = ggufedit.ThinkTemplate

// The reasoning goes to stderr (or nowhere), the answer to stdout.
func TestRunChatThinking(t *testing.T) {
	needGPU(t)
	model := filepath.Join(t.TempDir(), "kjv-think.gguf")
	withChatTemplate(t, sharedfiles.File(t, kjvF16), model, thinkTemplate)
	out, errOut, l := chatRun(t, "", model, "--chat", "-p", "In the beginning", "-n", "5")
	if len(l.prompts) != 1 || !strings.HasSuffix(l.prompts[0], "<think>\n") || len(l.warns) != 0 {
		t.Fatalf("prompts %q, warnings %q: want the model's template", l.prompts, l.warns)
	}
	raw, _, err := wgllm(t, "", "run", "-m", model, "--temp", "0", "-n", "5", "-p", l.prompts[0])
	if err != nil {
		t.Fatal(err)
	}
	// The model, knowing no </think>, reasons for all its 5 tokens.
	reasoning := strings.TrimSuffix(raw, "\n")
	if out != "\n" || !strings.Contains(errOut, reasoning+"\n") {
		t.Errorf("stdout %q (want only the newline), stderr %q (want the reasoning %q)", out, errOut, reasoning)
	}
	out, errOut, _ = chatRun(t, "", model, "--chat", "-p", "In the beginning", "-n", "5", "--hide-thinking")
	if out != "\n" || strings.Contains(errOut, reasoning) {
		t.Errorf("--hide-thinking: stdout %q, stderr %q", out, errOut)
	}
	out, _, l = chatRun(t, "", model, "--chat", "-p", "In the beginning", "-n", "5", "--think=false")
	if len(l.prompts) != 1 || !strings.HasSuffix(l.prompts[0], "</think>\n\n") {
		t.Fatalf("--think=false: prompts %q", l.prompts)
	}
	raw, _, err = wgllm(t, "", "run", "-m", model, "--temp", "0", "-n", "5", "-p", l.prompts[0])
	if err != nil {
		t.Fatal(err)
	}
	if out != strings.TrimLeft(raw, "\n") {
		t.Errorf("--think=false: stdout %q, want the answer %q", out, raw)
	}
}

// gpt-oss chats in harmony: its template renders the prompt, and no
// harmony marker reaches stdout.
func TestRunChatGPTOSS(t *testing.T) {
	needGPU(t)
	model, _ := writeGPTOSSChat(t, t.TempDir())
	out, _, l := chatRun(t, "", model, "--chat", "-p", "In the beginning", "-n", "8")
	if len(l.prompts) != 1 || !strings.HasSuffix(l.prompts[0], "<|start|>user<|message|>In the beginning<|end|><|start|>assistant") || len(l.warns) != 0 {
		t.Fatalf("prompts %q, warnings %q: want gpt-oss's template", l.prompts, l.warns)
	}
	if strings.Contains(out, "<|") || len(l.replies) != 1 || l.replies[0].CompletionTokens == 0 {
		t.Errorf("stdout %q, replies %+v", out, l.replies)
	}
}

// Ctrl-C stops the reply in progress, not the chat.
func TestRunChatInterruptStopsTheReply(t *testing.T) {
	needGPU(t)
	model := sharedfiles.File(t, kjvF16)
	cmd := exec.Command(binary, "run", "-m", model, "-i", "-n", "400", "--log-level", "debug", "--log-format", "json")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout = io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	io.WriteString(stdin, "In the beginning\n")
	var log strings.Builder
	sc := bufio.NewScanner(stderr)
	interrupted := false
	t0 := time.Now()
	for sc.Scan() {
		log.WriteString(sc.Text() + "\n")
		if !interrupted && strings.Contains(sc.Text(), `"chat prompt"`) {
			time.Sleep(300 * time.Millisecond) // into the reply
			if err := cmd.Process.Signal(os.Interrupt); err != nil {
				t.Fatal(err)
			}
			interrupted = true
		}
		if strings.Contains(sc.Text(), `"reply done"`) && strings.Contains(log.String(), `"cancelled"`) {
			io.WriteString(stdin, "/bye\n")
		}
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("%v\n%s", err, log.String())
	}
	l := parseChatLog(t, log.String())
	if len(l.replies) != 1 || l.replies[0].FinishReason != "cancelled" || l.replies[0].CompletionTokens >= 400 {
		t.Errorf("replies %+v after %v: want the one reply cancelled", l.replies, time.Since(t0))
	}
}
