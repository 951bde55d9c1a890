package tests

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// servedBinary is `wgllm serve` running as a child process.
type servedBinary struct {
	cmd    *exec.Cmd
	base   string
	stderr *lockedBuffer
	exited chan error
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// serveBinary starts `wgllm serve` on a free loopback port with env added
// and waits for its address line.
func serveBinary(t *testing.T, env []string, args ...string) *servedBinary {
	t.Helper()
	cmd := exec.Command(binary, append([]string{"serve", "--addr", "127.0.0.1:0", "--log-format", "json"}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	sb := &servedBinary{cmd: cmd, stderr: &lockedBuffer{}, exited: make(chan error, 1)}
	cmd.Stderr = sb.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { sb.exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		if t.Failed() {
			t.Logf("server stderr:\n%s", sb.stderr.String())
		}
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatalf("no address line: %v\nstderr: %s", err, sb.stderr.String())
	}
	m := regexp.MustCompile(`http://(\S+?)/`).FindStringSubmatch(line)
	if m == nil {
		t.Fatalf("address line %q", line)
	}
	sb.base = "http://" + m[1]
	go io.Copy(io.Discard, stdout)
	return sb
}

func (sb *servedBinary) waitHealthy(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		if resp, err := http.Get(sb.base + "/health"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("/health never turned 200\nstderr: %s", sb.stderr.String())
}

// exitCode waits for the process to end (at most d) and returns its code.
func (sb *servedBinary) exitCode(t *testing.T, d time.Duration) int {
	t.Helper()
	select {
	case err := <-sb.exited:
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ee.ExitCode()
		}
		if err != nil {
			t.Fatal(err)
		}
		return 0
	case <-time.After(d):
		t.Fatalf("still running %v later", d)
		return -1
	}
}

// streamUntilFirstText posts a streamed completion and returns the open
// body once the first text has arrived, and a channel that gets the
// rest's finish reason ("" if the stream broke) when it ends.
func streamUntilFirstText(t *testing.T, base, body string) <-chan string {
	t.Helper()
	resp, err := http.Post(base+"/v1/completions", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("stream: status %d", resp.StatusCode)
	}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if l := sc.Text(); strings.Contains(l, `"text":"`) && !strings.Contains(l, `"text":""`) {
			break
		}
	}
	out := make(chan string, 1)
	go func() {
		defer resp.Body.Close()
		reason, done := "", false
		re := regexp.MustCompile(`"finish_reason":"(\w+)"`)
		for sc.Scan() {
			if m := re.FindStringSubmatch(sc.Text()); m != nil {
				reason = m[1]
			}
			if sc.Text() == "data: [DONE]" {
				done = true
			}
		}
		if !done {
			reason = ""
		}
		out <- reason
	}()
	return out
}

// TestServeSIGTERM: with requests in flight, SIGTERM stops new connections,
// lets a short request finish, cancels a long one at the configured
// deadline (server.shutdown_timeout, from the environment here) and exits 0.
func TestServeSIGTERM(t *testing.T) {
	needGPU(t)
	sb := serveBinary(t, []string{"WGLLM_SERVER_SHUTDOWN_TIMEOUT=3s", "WGLLM_ENGINE_MAX_BATCH=2"}, "-m", kjvModel)
	sb.waitHealthy(t)
	long := streamUntilFirstText(t, sb.base, `{"prompt":"And it came to pass","max_tokens":400,"stream":true}`)
	short := streamUntilFirstText(t, sb.base, `{"prompt":"In the beginning","max_tokens":3,"temperature":0,"stream":true}`)
	if err := sb.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// New connections are refused once the listener is closed.
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get(sb.base + "/health")
		if err != nil {
			break
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusServiceUnavailable {
			break // draining: also a refusal
		}
		if time.Now().After(deadline) {
			t.Fatalf("/health still %d after SIGTERM", resp.StatusCode)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if r := <-short; r != "length" {
		t.Errorf("short request in flight at SIGTERM ended %q, want length", r)
	}
	if r := <-long; r != "cancelled" {
		t.Errorf("long request ended %q, want cancelled at the shutdown deadline", r)
	}
	if code := sb.exitCode(t, time.Minute); code != 0 {
		t.Errorf("exit code %d, want 0", code)
	}
	logs := sb.stderr.String()
	for _, want := range []string{`"timeout":3000`, `shutdown deadline: cancelled in-flight generations`, `"message":"shut down"`} {
		if !strings.Contains(logs, want) {
			t.Errorf("log lacks %s", want)
		}
	}
}

// TestServeBadModelExits: a missing or corrupt model at start-up gives a
// clear message and a non-zero exit, not a server that stays 503.
func TestServeBadModelExits(t *testing.T) {
	dir := t.TempDir()
	corrupt := filepath.Join(dir, "corrupt.gguf")
	os.WriteFile(corrupt, []byte("GGUF\x03\x00\x00\x00\xff\xff\xff\xff\xff\xff\xff\xff"), 0o644)
	truncated := filepath.Join(dir, "truncated.gguf")
	data, err := os.ReadFile(kjvModel)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(truncated, data[:len(data)/2], 0o644)
	for _, c := range []struct{ path, want string }{
		{filepath.Join(dir, "missing.gguf"), "no such file"},
		{corrupt, "gguf"},
		{truncated, "past the end"},
	} {
		sb := serveBinary(t, nil, "-m", c.path)
		code := sb.exitCode(t, time.Minute)
		msg := sb.stderr.String()
		last := msg[strings.LastIndex(strings.TrimRight(msg, "\n"), "\n")+1:]
		if code == 0 || !strings.HasPrefix(last, "wgllm: ") || !strings.Contains(last, c.want) || strings.Contains(msg, "panic") {
			t.Errorf("%s: exit %d, last line %q (want wgllm: …%s…)", filepath.Base(c.path), code, last, c.want)
		}
	}
}

// TestServeAPIKeyFromEnvironment: WGLLM_SERVER_API_KEY protects /v1 and
// /ws of the real binary (the variable was once ignored).
func TestServeAPIKeyFromEnvironment(t *testing.T) {
	needGPU(t)
	sb := serveBinary(t, []string{"WGLLM_SERVER_API_KEY=s3cret"}, "-m", kjvModel)
	sb.waitHealthy(t)
	for _, path := range []string{"/v1/models", "/v1/requests/x", "/ws"} {
		resp, err := http.Get(sb.base + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("%s without the key: %d, want 401", path, resp.StatusCode)
		}
	}
	req, _ := http.NewRequest("GET", sb.base+"/v1/models", nil)
	req.Header.Set("Authorization", "Bearer s3cret")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("with the key: %d", resp.StatusCode)
	}
	sb.cmd.Process.Signal(syscall.SIGTERM)
	if code := sb.exitCode(t, time.Minute); code != 0 {
		t.Errorf("exit code %d after SIGTERM", code)
	}
}
