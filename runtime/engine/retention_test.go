package engine

import (
	"strings"
	"testing"
	"time"

	"github.com/wgllm/wgllm/runtime/sample"
)

// TestActiveSequencesAfterCancelAll: wgllm_active_sequences stayed at the
// size of the last batch once every job of it was cancelled (reap did not
// update the count and the idle loop did not reset it).
func TestActiveSequencesAfterCancelAll(t *testing.T) {
	e := newEngine(t, 4, Options{MaxBatch: 4})
	var cs []*collector
	var ids []string
	for i := range 4 {
		c := newCollector()
		id, err := e.Submit(Job{Prompt: prompts[i], MaxTokens: 100, Sampling: sample.Greedy()}, c.emit)
		if err != nil {
			t.Fatal(err)
		}
		cs, ids = append(cs, c), append(ids, id)
	}
	deadline := time.Now().Add(2 * time.Minute)
	for e.Metrics().ActiveSequences < 4 {
		if time.Now().After(deadline) {
			t.Fatalf("never 4 active: %+v", e.Metrics())
		}
		time.Sleep(time.Millisecond)
	}
	for _, id := range ids {
		e.Cancel(id)
	}
	for _, c := range cs {
		if _, ev := c.wait(t); ev.FinishReason != "cancelled" {
			t.Errorf("finish %q, want cancelled", ev.FinishReason)
		}
	}
	time.Sleep(50 * time.Millisecond) // the loop goes idle
	if m := e.Metrics(); m.ActiveSequences != 0 || m.KVBlocksUsed != 0 {
		t.Errorf("after cancelling the whole batch: %d active sequences, %d KV blocks in use; want 0", m.ActiveSequences, m.KVBlocksUsed)
	}
}

// TestFinishedJobsBoundedByBytes: finished jobs (kept for Status) held
// their prompts, up to 1,024 of them (~256 MB of 256 KiB prompts). Now
// prompts are dropped at the end and the texts kept are bounded by
// KeepFinishedBytes, oldest first; the newest stay visible. No GPU: the
// bookkeeping of finish alone.
func TestFinishedJobsBoundedByBytes(t *testing.T) {
	e := &Engine{opt: Options{KeepFinished: 1024, KeepFinishedBytes: 1 << 20}, jobs: map[string]*job{}}
	prompt := strings.Repeat("p", 256<<10)
	text := strings.Repeat("t", 100<<10)
	var last string
	for i := range 200 {
		j := &job{Job: Job{ID: "job" + itoa(i), Prompt: prompt, Stop: []string{"x"}}, seq: -1}
		j.text.WriteString(text)
		e.mu.Lock()
		e.jobs[j.ID] = j
		e.mu.Unlock()
		e.finish(j, "stop", nil)
		last = j.ID
	}
	held := 0
	for _, j := range e.jobs {
		held += len(j.Prompt) + j.text.Len()
	}
	if held > 1<<20 || len(e.jobs) != 10 {
		t.Errorf("200 finished jobs of 256 KiB prompts and 100 KiB texts: %d kept holding %d bytes; want 10 within 1 MiB", len(e.jobs), held)
	}
	if st, ok := e.Status(last); !ok || st.Text != text || st.State != Done {
		t.Errorf("the newest job's status: %v %v", ok, st.State)
	}
	if _, ok := e.Status("job0"); ok {
		t.Error("the oldest job is still kept")
	}
}

func itoa(i int) string {
	const digits = "0123456789"
	if i < 10 {
		return digits[i : i+1]
	}
	return itoa(i/10) + digits[i%10:i%10+1]
}
