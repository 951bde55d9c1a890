package hub

import (
	"context"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/wgllm/wgllm/internal/modelstore"
	"github.com/wgllm/wgllm/runtime/gguf"
)

// Progress is reported as a download advances.
type Progress struct {
	Done  int64 // bytes of the file on disk so far
	Total int64
	Start int64 // bytes that were already there when this attempt began
}

// digest is the checksum a file must have: the sha256 of its content for
// LFS files, else its git blob id.
type digest struct{ kind, hex string }

func (d digest) String() string { return d.kind + ":" + d.hex }

func expectedDigest(f File) (digest, error) {
	switch {
	case len(f.SHA256) == 64 && hexRE.MatchString(f.SHA256):
		return digest{"sha256", f.SHA256}, nil
	case f.SHA256 == "" && len(f.OID) == 40 && hexRE.MatchString(f.OID):
		return digest{"git-blob-sha1", f.OID}, nil
	}
	return digest{}, fmt.Errorf("the hub lists no usable checksum for %s (sha256 %q, oid %q); refusing an unverifiable download", f.Path, f.SHA256, f.OID)
}

func (d digest) newHash(size int64) hash.Hash {
	if d.kind == "sha256" {
		return sha256.New()
	}
	h := sha1.New()
	fmt.Fprintf(h, "blob %d\x00", size)
	return h
}

// retryable marks an error after which resuming may succeed.
type retryable struct{ error }

func (r retryable) Unwrap() error { return r.error }

var errStalled = errors.New("no data received within the stall timeout")

// errDeadline ends a Download that ran past Client.Deadline.
var errDeadline = errors.New("the download deadline passed")

// ErrNotGGUF is wrapped by a Download of a .gguf file whose content
// matched its checksum but is not a GGUF file.
var ErrNotGGUF = errors.New("not a GGUF file")

// Defaults of Client.MinRate and Client.RateWindow.
const (
	defaultMinRate    = 4 << 10
	defaultRateWindow = time.Minute
)

// slowError ends an attempt that stayed below the minimum rate.
type slowError struct {
	got, floor int64
	window     time.Duration
}

func (e *slowError) Error() string {
	return fmt.Sprintf("the transfer averaged %s/s over %v, below the minimum of %s/s (hub.min_rate)", HumanBytes(e.got), e.window, HumanBytes(e.floor))
}

func (c *Client) rateFloor() (int64, time.Duration) {
	rate, window := c.MinRate, c.RateWindow
	if rate == 0 {
		rate = defaultMinRate
	}
	if window <= 0 {
		window = defaultRateWindow
	}
	return rate, window
}

// FileURL is where the hub serves a file of repo at revision.
func (c *Client) FileURL(repo, revision, file string) string {
	if revision == "" {
		revision = "main"
	}
	segs := strings.Split(file, "/")
	for i, s := range segs {
		segs[i] = url.PathEscape(s)
	}
	return c.base() + "/" + repo + "/resolve/" + url.PathEscape(revision) + "/" + strings.Join(segs, "/")
}

// Download fetches f from repo at revision into dest. The bytes go to
// dest+".partial" first (with the expected checksum beside it in
// ".partial.digest"); an interrupted download, in this call (Retries) or a
// later one, resumes from there with an HTTP Range request. Once all
// bytes are in and their checksum matches the listing's, the file is synced
// and renamed to dest. A checksum mismatch removes the partial file (after
// one fresh retry if the partial came from an earlier run). progress may be
// nil.
func (c *Client) Download(ctx context.Context, repo, revision string, f File, dest string, progress func(Progress)) (err error) {
	if err := modelstore.ValidRepo(repo); err != nil {
		return err
	}
	if err := modelstore.ValidFile(f.Path); err != nil {
		return err
	}
	if f.Size < 0 {
		return fmt.Errorf("%s: listed with size %d", f.Path, f.Size)
	}
	want, err := expectedDigest(f)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(dest), 0o755); err != nil {
		return err
	}
	partial := dest + modelstore.PartialSuffix
	digestPath := partial + ".digest"
	pf, err := os.OpenFile(partial, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	if err := lockFile(pf); err != nil {
		pf.Close()
		return fmt.Errorf("%s is being downloaded by another process (%v)", dest, err)
	}
	defer func() {
		if pf == nil {
			return
		}
		// A failure before any byte arrived leaves nothing to resume.
		if st, serr := pf.Stat(); err != nil && serr == nil && st.Size() == 0 {
			os.Remove(partial)
			os.Remove(digestPath)
		}
		pf.Close()
	}()
	// A partial file resumes only the content it was started for.
	if rec, err := os.ReadFile(digestPath); err != nil || string(rec) != want.String() {
		if err := pf.Truncate(0); err != nil {
			return err
		}
		if err := os.WriteFile(digestPath, []byte(want.String()), 0o644); err != nil {
			return err
		}
	}
	if c.Deadline > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeoutCause(ctx, c.Deadline, fmt.Errorf("%w (%v, hub.deadline)", errDeadline, c.Deadline))
		defer cancel()
	}
	d := &download{c: c, ctx: ctx, url: c.FileURL(repo, revision, f.Path), file: f, want: want, pf: pf, progress: progress}
	for fresh := false; ; fresh = true {
		resumedFrom, err := d.run()
		if err != nil {
			return err
		}
		got := hex.EncodeToString(d.h.Sum(nil))
		if got == want.hex {
			break
		}
		if resumedFrom > 0 && !fresh {
			// The earlier run's bytes may be what is wrong: start over once.
			if err := pf.Truncate(0); err != nil {
				return err
			}
			continue
		}
		pf.Close()
		pf = nil
		os.Remove(partial)
		os.Remove(digestPath)
		return fmt.Errorf("%s: %w: the download's %s is %s, the hub lists %s; the download was removed", f.Path, ErrChecksum, want.kind, got, want.hex)
	}
	// A checksum only says the bytes are the hub's: a .gguf must also be
	// one before it is called verified.
	if strings.HasSuffix(strings.ToLower(f.Path), ".gguf") {
		if _, perr := gguf.Parse(pf, uint64(f.Size)); perr != nil {
			pf.Close()
			pf = nil
			os.Remove(partial)
			os.Remove(digestPath)
			return fmt.Errorf("%s: %w (its checksum matches the hub's listing, but %v); the download was removed", f.Path, ErrNotGGUF, perr)
		}
	}
	if err := pf.Sync(); err != nil {
		return err
	}
	err = pf.Close()
	pf = nil
	if err != nil {
		return err
	}
	if err := os.Rename(partial, dest); err != nil {
		return err
	}
	syncDir(filepath.Dir(dest))
	os.Remove(digestPath)
	return nil
}

// syncDir makes a rename durable where directories can be synced; a
// failure only weakens durability after a crash, so it is ignored.
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
}

// download is one file's transfer. Between reads the partial file holds
// exactly the bytes hashed so far.
type download struct {
	c        *Client
	ctx      context.Context
	url      string
	file     File
	want     digest
	pf       *os.File
	progress func(Progress)
	h        hash.Hash
	done     int64
}

// run hashes what the partial file already holds, then fetches the rest,
// resuming after breaks up to Retries times. It returns the size the
// partial file had to begin with.
func (d *download) run() (int64, error) {
	st, err := d.pf.Stat()
	if err != nil {
		return 0, err
	}
	have := st.Size()
	if have > d.file.Size {
		if err := d.pf.Truncate(0); err != nil {
			return 0, err
		}
		have = 0
	}
	d.h = d.want.newHash(d.file.Size)
	if _, err := io.Copy(d.h, io.NewSectionReader(d.pf, 0, have)); err != nil {
		return 0, err
	}
	d.done = have
	delay := d.c.RetryDelay
	if delay <= 0 {
		delay = time.Second
	}
	for attempt := 0; d.done < d.file.Size; attempt++ {
		err := d.attempt()
		if err == nil {
			continue
		}
		if d.ctx.Err() != nil {
			return 0, fmt.Errorf("%s: interrupted at %s of %s; run the same pull again to resume: %w",
				d.file.Path, HumanBytes(d.done), HumanBytes(d.file.Size), context.Cause(d.ctx))
		}
		var r retryable
		if !errors.As(err, &r) || attempt >= d.c.Retries {
			if d.done > 0 && errors.As(err, &r) {
				return 0, fmt.Errorf("%s: stopped at %s of %s; run the same pull again to resume: %w",
					d.file.Path, HumanBytes(d.done), HumanBytes(d.file.Size), err)
			}
			return 0, err
		}
		if d.c.OnRetry != nil {
			d.c.OnRetry(attempt+1, err, delay)
		}
		select {
		case <-time.After(delay):
		case <-d.ctx.Done():
		}
		delay *= 2
	}
	if d.progress != nil && d.done == have {
		d.progress(Progress{Done: d.done, Total: d.file.Size, Start: have})
	}
	return have, nil
}

// parseContentRange reads "bytes START-END/TOTAL" (TOTAL may be *, -1 here).
func parseContentRange(s string) (start, total int64, ok bool) {
	rest, found := strings.CutPrefix(s, "bytes ")
	if !found {
		return 0, 0, false
	}
	rng, tot, found := strings.Cut(rest, "/")
	if !found {
		return 0, 0, false
	}
	first, _, found := strings.Cut(rng, "-")
	if !found {
		return 0, 0, false
	}
	start, err := strconv.ParseInt(first, 10, 64)
	if err != nil {
		return 0, 0, false
	}
	total = -1
	if tot != "*" {
		if total, err = strconv.ParseInt(tot, 10, 64); err != nil {
			return 0, 0, false
		}
	}
	return start, total, true
}

// attempt makes one request for the bytes from d.done on and appends what
// arrives. It returns nil once the body ended at the file's size.
func (d *download) attempt() error {
	stallTimeout := d.c.StallTimeout
	if stallTimeout <= 0 {
		stallTimeout = time.Minute
	}
	ctx, cancel := context.WithCancelCause(d.ctx)
	defer cancel(nil)
	stall := time.AfterFunc(stallTimeout, func() { cancel(errStalled) })
	defer stall.Stop()
	// The stall timer restarts on every read, so a byte every few seconds
	// keeps it quiet; the rate floor is checked once per window.
	var got atomic.Int64
	if floor, window := d.c.rateFloor(); floor > 0 {
		tick := time.NewTicker(window)
		defer tick.Stop()
		go func() {
			last := int64(0)
			for {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
				now := got.Load()
				if rate := int64(float64(now-last) / window.Seconds()); rate < floor {
					cancel(&slowError{got: rate, floor: floor, window: window})
					return
				}
				last = now
			}
		}()
	}
	// cause is why ctx ended, when it was this attempt's own timer.
	cause := func(err error) error {
		var slow *slowError
		if c := context.Cause(ctx); errors.Is(c, errStalled) || errors.As(c, &slow) {
			return retryable{c}
		}
		return retryable{err}
	}

	req, err := d.c.newRequest(ctx, http.MethodGet, d.url)
	if err != nil {
		return err
	}
	// No transparent gzip: byte ranges must count the file's own bytes.
	req.Header.Set("Accept-Encoding", "identity")
	if d.done > 0 {
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-", d.done))
	}
	// The hub's own response (before any redirect to a CDN) carries the
	// file's sha256 and size; keep its headers.
	var hubHeader http.Header
	client := *d.c.httpClient()
	client.CheckRedirect = func(r *http.Request, via []*http.Request) error {
		if len(via) >= 10 {
			return errors.New("stopped after 10 redirects")
		}
		if hubHeader == nil && r.Response != nil {
			hubHeader = r.Response.Header
		}
		return nil
	}
	resp, err := client.Do(req)
	if err != nil {
		return cause(err)
	}
	defer resp.Body.Close()
	if hubHeader == nil {
		hubHeader = resp.Header
	}
	what := "downloading " + d.file.Path
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusPartialContent {
		e := httpError(what, resp)
		if e.Temporary() {
			return retryable{e}
		}
		return e
	}
	if etag := strings.Trim(strings.TrimPrefix(hubHeader.Get("X-Linked-Etag"), "W/"), `"`); d.want.kind == "sha256" && len(etag) == 64 && hexRE.MatchString(strings.ToLower(etag)) && strings.ToLower(etag) != d.want.hex {
		return fmt.Errorf("%s: the hub now serves a different version (sha256 %s, the listing said %s); pull again", d.file.Path, etag, d.want.hex)
	}
	if s := hubHeader.Get("X-Linked-Size"); s != "" {
		if n, err := strconv.ParseInt(s, 10, 64); err == nil && n != d.file.Size {
			return fmt.Errorf("%s: the hub now serves %d bytes, the listing said %d; pull again", d.file.Path, n, d.file.Size)
		}
	}
	if resp.StatusCode == http.StatusOK && d.done > 0 {
		// The server ignored the Range header: take the whole file again.
		if err := d.pf.Truncate(0); err != nil {
			return err
		}
		d.h = d.want.newHash(d.file.Size)
		d.done = 0
	}
	if resp.StatusCode == http.StatusPartialContent {
		start, total, ok := parseContentRange(resp.Header.Get("Content-Range"))
		if !ok || start != d.done || (total >= 0 && total != d.file.Size) {
			return fmt.Errorf("%s: asked for bytes from %d of %d, the server sent Content-Range %q", d.file.Path, d.done, d.file.Size, resp.Header.Get("Content-Range"))
		}
	}
	start := d.done
	if d.progress != nil {
		d.progress(Progress{Done: d.done, Total: d.file.Size, Start: start})
	}
	buf := make([]byte, 1<<20)
	for {
		n, rerr := resp.Body.Read(buf)
		if n > 0 {
			stall.Reset(stallTimeout)
			if d.done+int64(n) > d.file.Size {
				return fmt.Errorf("%s: the server sent more than the listed %d bytes", d.file.Path, d.file.Size)
			}
			if _, err := d.pf.WriteAt(buf[:n], d.done); err != nil {
				// Keep the partial file equal to what was hashed.
				d.pf.Truncate(d.done)
				return err
			}
			d.h.Write(buf[:n])
			d.done += int64(n)
			got.Add(int64(n))
			if d.progress != nil {
				d.progress(Progress{Done: d.done, Total: d.file.Size, Start: start})
			}
		}
		switch {
		case rerr == io.EOF && d.done == d.file.Size:
			return nil
		case rerr == io.EOF:
			return retryable{fmt.Errorf("the connection ended at byte %d of %d: %w", d.done, d.file.Size, io.ErrUnexpectedEOF)}
		case rerr != nil:
			return cause(rerr)
		}
	}
}
