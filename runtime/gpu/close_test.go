package gpu

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// closeChildEnv runs the scenario of TestCloseAfterUnsubmittedWrites in a
// child process: before the fix it aborted the process from inside
// wgpu-native, which a test cannot recover from.
const closeChildEnv = "WGLLM_GPU_CLOSE_CHILD"

// TestCloseAfterUnsubmittedWrites is a model load that fails partway: buffers
// written (queue.WriteBuffer) but never submitted, destroyed, the device
// closed. The next device's first submission must work; it aborted with
// "Attempt to use a resource with a different device" while Close left the
// queue's pending writes unsubmitted.
func TestCloseAfterUnsubmittedWrites(t *testing.T) {
	if os.Getenv(closeChildEnv) == "" {
		open(t).Close() // skips when no adapter exists
		cmd := exec.Command(os.Args[0], "-test.run", "^TestCloseAfterUnsubmittedWrites$", "-test.count=1", "-test.v")
		cmd.Env = append(os.Environ(), closeChildEnv+"=1")
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "second device ok") {
			t.Fatalf("second device after a closed one with unsubmitted writes: %v\n%s", err, wgpuPanic(string(out)))
		}
		return
	}
	for round := range 3 {
		c, err := New(OptionsFromEnv())
		if err != nil {
			t.Fatal(err)
		}
		b, err := c.NewBuffer("unsubmitted", 1<<16)
		if err != nil {
			t.Fatal(err)
		}
		if err := b.Write(0, make([]byte, 1<<16)); err != nil {
			t.Fatal(err)
		}
		b.Destroy()
		c.Close()

		d, err := New(OptionsFromEnv())
		if err != nil {
			t.Fatal(err)
		}
		src, _ := d.NewBuffer("src", 1024)
		dst, _ := d.NewBuffer("dst", 1024)
		data := make([]byte, 1024)
		for i := range data {
			data[i] = byte(i*5 + round)
		}
		if err := src.Write(0, data); err != nil {
			t.Fatal(err)
		}
		enc, err := d.NewEncoder()
		if err != nil {
			t.Fatal(err)
		}
		if err := enc.Copy(dst, 0, src, 0, 1024); err != nil {
			t.Fatal(err)
		}
		if err := enc.SubmitAndWait(); err != nil {
			t.Fatal(err)
		}
		got, err := dst.Read(0, 1024)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != string(data) {
			t.Fatal("copy on the second device gave other bytes")
		}
		src.Destroy()
		dst.Destroy()
		d.Close()
	}
	t.Log("second device ok")
}

// wgpuPanic is the part of a child's output that says why it died: from
// wgpu-native's panic message on, else the last lines.
func wgpuPanic(out string) string {
	if i := strings.Index(out, "panicked at"); i >= 0 {
		out = out[i:]
	}
	return out[:min(len(out), 600)]
}
