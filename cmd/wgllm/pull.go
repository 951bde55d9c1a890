package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/mattn/go-isatty"
	"github.com/rs/zerolog"
	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"github.com/wgllm/wgllm/internal/hub"
	"github.com/wgllm/wgllm/internal/modelstore"
)

func pullCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "pull REPO[:FILE|:TAG]",
		Short: "Download a GGUF model from Hugging Face (or hub.url) into the model store",
		Long: `Download a GGUF model into the model store (see wgllm list).

REPO is a Hugging Face repo id (owner/name). FILE names the file in it; a
TAG such as Q8_0 picks the file whose name carries it; with neither, the
repo's only GGUF file or else its Q4_K_M. An interrupted pull resumes where
it stopped when run again; the file is checked against the hub's sha256
before it appears in the store.

  wgllm pull bartowski/Llama-3.2-1B-Instruct-GGUF
  wgllm pull Qwen/Qwen2.5-0.5B-Instruct-GGUF:Q8_0
  wgllm run -m Qwen/Qwen2.5-0.5B-Instruct-GGUF:Q8_0 -p "Hello"

The hub is hub.url (WGLLM_HUB_URL, --hub-url; default https://huggingface.co);
gated or private repos need hub.token or HF_TOKEN. A transfer slower than
hub.min_rate (4KB/s) over hub.rate_window (60s) is resumed, then given up;
hub.deadline bounds a whole pull. A .gguf is checked to be GGUF before it is
called verified. The model's store name
is printed on stdout.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			revision, _ := cmd.Flags().GetString("revision")
			retries, _ := cmd.Flags().GetInt("retries")
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			var pr *pullProgress
			t0 := time.Now()
			name, dest, err := a.pullModel(ctx, args[0], revision, retries, func(f hub.File) func(hub.Progress) {
				a.log.Info().Str("model", f.Path).Str("size", hub.HumanBytes(f.Size)).Str("sha256", f.SHA256).Msg("pulling")
				pr = newPullProgress(a.log, f.Path)
				return pr.update
			})
			if pr != nil {
				pr.finish(err == nil)
			}
			if err != nil {
				return err
			}
			a.log.Info().Str("model", name).Str("path", dest).Dur("took", time.Since(t0).Round(time.Millisecond)).Msg("pulled and verified")
			_, err = fmt.Fprintln(os.Stdout, name)
			return err
		},
	}
	cmd.Flags().String("hub-url", "", "hub to download from (default: hub.url, https://huggingface.co)")
	cmd.Flags().String("revision", "main", "branch, tag or commit of the repo")
	cmd.Flags().Int("retries", 5, "times a broken-off download resumes before giving up")
	return cmd
}

// pullModel downloads a model (REPO[:FILE|:TAG]) into the store unless it
// is there, and returns its store name and path. starting is called with
// the file once it is known to need downloading, and returns what gets
// the download's progress.
func (a *app) pullModel(ctx context.Context, ref, revision string, retries int, starting func(hub.File) func(hub.Progress)) (name, dest string, err error) {
	repo, want, err := modelstore.ParseRef(ref)
	if err != nil {
		return "", "", err
	}
	token := a.cfg.GetString("hub.token")
	if token == "" {
		token = os.Getenv("HF_TOKEN")
	}
	c := &hub.Client{
		BaseURL:    a.cfg.GetString("hub.url"),
		Token:      token,
		UserAgent:  "wgllm",
		Retries:    retries,
		MinRate:    minRate(a.cfg.GetSizeInBytes("hub.min_rate")),
		RateWindow: a.cfg.GetDuration("hub.rate_window"),
		Deadline:   a.cfg.GetDuration("hub.deadline"),
		OnRetry: func(n int, err error, wait time.Duration) {
			a.log.Warn().Err(err).Int("attempt", n).Dur("wait", wait).Msg("download broke off; resuming")
		},
	}
	files, err := c.ListFiles(ctx, repo, revision)
	if err != nil {
		return "", "", err
	}
	f, err := hub.ChooseGGUF(repo, files, want)
	if err != nil {
		return "", "", err
	}
	dest, err = a.store().Path(repo, f.Path)
	if err != nil {
		return "", "", err
	}
	name = modelstore.Name(repo, f.Path)
	if fi, err := os.Stat(dest); err == nil && fi.Size() == f.Size {
		a.log.Info().Str("model", name).Str("path", dest).Msg("already in the store")
		return name, dest, nil
	}
	return name, dest, c.Download(ctx, repo, revision, f, dest, starting(f))
}

// pullProgress shows a download: a bar with rate and ETA on a terminal,
// else a log line every few seconds.
type pullProgress struct {
	log     zerolog.Logger
	file    string
	tty     bool
	bar     *progressbar.ProgressBar
	start   int64 // Progress.Start of the attempt the bar shows
	t0      time.Time
	lastLog time.Time
	last    hub.Progress
}

func newPullProgress(log zerolog.Logger, file string) *pullProgress {
	return &pullProgress{log: log, file: file, tty: isatty.IsTerminal(os.Stderr.Fd()), start: -1}
}

const pullLogEvery = 5 * time.Second

func (p *pullProgress) update(pr hub.Progress) {
	p.last = pr
	if pr.Start != p.start { // a new attempt (the first, or a resumption)
		p.start, p.t0 = pr.Start, time.Now()
		if p.tty {
			p.newBar(pr)
		} else if pr.Start > 0 {
			p.log.Info().Str("file", p.file).Str("at", hub.HumanBytes(pr.Start)).Str("of", hub.HumanBytes(pr.Total)).Msg("resuming")
		}
	}
	if p.bar != nil {
		_ = p.bar.Set64(pr.Done - pr.Start)
		return
	}
	if now := time.Now(); now.Sub(p.lastLog) >= pullLogEvery {
		p.lastLog = now
		p.logLine("downloading")
	}
}

// newBar starts a bar over the bytes this attempt fetches, so its rate and
// ETA count only them.
func (p *pullProgress) newBar(pr hub.Progress) {
	if p.bar != nil {
		_ = p.bar.Exit()
	}
	desc := p.file
	if pr.Start > 0 {
		desc = fmt.Sprintf("%s (resumed at %s)", p.file, hub.HumanBytes(pr.Start))
	}
	p.bar = progressbar.NewOptions64(max(1, pr.Total-pr.Start),
		progressbar.OptionSetWriter(os.Stderr),
		progressbar.OptionSetDescription(desc),
		progressbar.OptionShowBytes(true),
		progressbar.OptionShowCount(),
		progressbar.OptionShowTotalBytes(true),
		progressbar.OptionSetPredictTime(true),
		progressbar.OptionSetWidth(30),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionOnCompletion(func() { fmt.Fprintln(os.Stderr) }),
	)
}

func (p *pullProgress) logLine(msg string) {
	pr := p.last
	ev := p.log.Info().Str("file", p.file).Str("done", hub.HumanBytes(pr.Done)).Str("of", hub.HumanBytes(pr.Total))
	if pr.Total > 0 {
		ev = ev.Str("percent", fmt.Sprintf("%.1f", 100*float64(pr.Done)/float64(pr.Total)))
	}
	if secs := time.Since(p.t0).Seconds(); secs > 0 && pr.Done > pr.Start {
		rate := float64(pr.Done-pr.Start) / secs
		ev = ev.Str("rate", hub.HumanBytes(int64(rate))+"/s")
		if pr.Done < pr.Total {
			ev = ev.Str("eta", time.Duration(float64(pr.Total-pr.Done)/rate*float64(time.Second)).Round(time.Second).String())
		}
	}
	ev.Msg(msg)
}

func (p *pullProgress) finish(ok bool) {
	if p.bar != nil {
		if ok {
			_ = p.bar.Finish()
		} else {
			_ = p.bar.Exit()
			fmt.Fprintln(os.Stderr)
		}
		return
	}
	if ok && p.start >= 0 {
		p.logLine("downloaded")
	}
}

// minRate is hub.min_rate as hub.Client wants it: 0 in the config turns
// the floor off.
func minRate(n uint) int64 {
	if n == 0 {
		return -1
	}
	return int64(n)
}
