// Package supervisor owns a serving engine and its GPU device, and
// rebuilds both when the device is lost (a driver reset, a GPU hang, an
// unplugged eGPU): the requests in flight fail with the loss as their
// error, the supervisor reports itself unavailable (the server's /health
// answers 503) while it re-creates the device and reloads the model, and
// then serves again. It satisfies serve.Backend, so the server never sees
// the engine change.
package supervisor

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"github.com/wgllm/wgllm/runtime/engine"
	"github.com/wgllm/wgllm/runtime/gpu"
)

// Instance is one loaded engine and the device it runs on.
type Instance struct {
	Engine *engine.Engine
	GPU    *gpu.Context
	// Close frees the model, the device and the file, after the engine
	// has stopped.
	Close func()
}

// LoadFunc opens a new device and loads the model on it.
type LoadFunc func() (*Instance, error)

// Options tune the supervisor; zero fields take the defaults noted.
type Options struct {
	// CheckInterval is how often the device is checked for loss. 250ms.
	CheckInterval time.Duration
	// RetryInterval is the wait between failed reloads. 2s.
	RetryInterval time.Duration
	Log           zerolog.Logger
}

// ErrRecovering is the health error while the device is being re-created.
var ErrRecovering = errors.New("the GPU device was lost; re-creating it and reloading the model")

// Supervisor serves through the current Instance and replaces it after a
// device loss. Its methods are safe for concurrent use.
type Supervisor struct {
	load LoadFunc
	opt  Options
	name string // the model's name, kept while reloading

	mu         sync.Mutex
	cur        *Instance // nil while recovering
	lossErr    error     // the loss being recovered from
	recoveries int
	closed     bool

	stop chan struct{}
	done chan struct{}
}

// New loads the first instance (its error is returned as is: a missing or
// corrupt model must stop the program) and starts watching the device.
func New(load LoadFunc, opt Options) (*Supervisor, error) {
	if opt.CheckInterval <= 0 {
		opt.CheckInterval = 250 * time.Millisecond
	}
	if opt.RetryInterval <= 0 {
		opt.RetryInterval = 2 * time.Second
	}
	in, err := load()
	if err != nil {
		return nil, err
	}
	s := &Supervisor{load: load, opt: opt, name: in.Engine.ModelName(), cur: in,
		stop: make(chan struct{}), done: make(chan struct{})}
	go s.watch()
	return s, nil
}

// watch checks the device until Close, recovering after a loss.
func (s *Supervisor) watch() {
	defer close(s.done)
	tick := time.NewTicker(s.opt.CheckInterval)
	defer tick.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-tick.C:
		}
		s.mu.Lock()
		in := s.cur
		s.mu.Unlock()
		if in == nil {
			continue
		}
		if err := in.GPU.Err(); err != nil {
			s.recover(in, err)
		}
	}
}

// recover fails what in was doing, frees it and loads a new instance,
// retrying until it succeeds or Close.
func (s *Supervisor) recover(in *Instance, lossErr error) {
	s.mu.Lock()
	s.cur, s.lossErr = nil, lossErr
	s.mu.Unlock()
	s.opt.Log.Error().Err(lossErr).Msg("GPU device lost: failing requests in flight, re-creating the device and reloading the model")
	start := time.Now()
	in.Engine.Abort(fmt.Errorf("%w (the server is reloading the model)", lossErr))
	in.Close()
	for attempt := 1; ; attempt++ {
		next, err := s.load()
		if err == nil {
			s.mu.Lock()
			if s.closed {
				s.mu.Unlock()
				next.Engine.Close()
				next.Close()
				return
			}
			s.cur, s.lossErr = next, nil
			s.recoveries++
			s.mu.Unlock()
			s.opt.Log.Info().Int("attempt", attempt).Dur("took", time.Since(start)).Msg("GPU device re-created and model reloaded; serving again")
			return
		}
		s.opt.Log.Error().Err(err).Int("attempt", attempt).Dur("retry_in", s.opt.RetryInterval).Msg("reloading after device loss failed")
		select {
		case <-s.stop:
			return
		case <-time.After(s.opt.RetryInterval):
		}
	}
}

// current returns the instance serving now, or nil while recovering.
func (s *Supervisor) current() *Instance {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cur
}

// Health is nil while serving, else why not (serve's /health answers 503
// with it).
func (s *Supervisor) Health() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.closed:
		return engine.ErrClosed
	case s.cur == nil:
		return fmt.Errorf("%w: %v", ErrRecovering, s.lossErr)
	}
	return nil
}

// Recoveries counts the device losses recovered from.
func (s *Supervisor) Recoveries() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.recoveries
}

// InjectDeviceLoss destroys the current device as a driver reset would
// (a test hook); the supervisor then recovers as from a real loss.
func (s *Supervisor) InjectDeviceLoss() {
	if in := s.current(); in != nil {
		in.GPU.InjectDeviceLoss()
	}
}

// Submit queues a job on the current engine; engine.ErrNotReady while
// recovering (the server answers 503).
func (s *Supervisor) Submit(job engine.Job, emit func(engine.Event)) (string, error) {
	in := s.current()
	if in == nil {
		return "", engine.ErrNotReady
	}
	return in.Engine.Submit(job, emit)
}

// Cancel cancels a job of the current engine (those of a lost one have
// all ended).
func (s *Supervisor) Cancel(id string) bool {
	if in := s.current(); in != nil {
		return in.Engine.Cancel(id)
	}
	return false
}

// Status reports a job of the current engine; the records of jobs that
// ran on a lost device are gone.
func (s *Supervisor) Status(id string) (engine.Status, bool) {
	if in := s.current(); in != nil {
		return in.Engine.Status(id)
	}
	return engine.Status{}, false
}

// Embed computes embeddings on the current engine; engine.ErrNotReady
// while recovering.
func (s *Supervisor) Embed(ctx context.Context, req engine.EmbedRequest) (engine.EmbedResult, error) {
	in := s.current()
	if in == nil {
		return engine.EmbedResult{}, engine.ErrNotReady
	}
	return in.Engine.Embed(ctx, req)
}

// RenderChat renders with the model's template.
func (s *Supervisor) RenderChat(c engine.Chat) (engine.RenderedChat, error) {
	in := s.current()
	if in == nil {
		return engine.RenderedChat{}, engine.ErrNotReady
	}
	return in.Engine.RenderChat(c)
}

// ModelName is the model's name, also while recovering.
func (s *Supervisor) ModelName() string { return s.name }

// Metrics of the current engine (zero while recovering).
func (s *Supervisor) Metrics() engine.Metrics {
	if in := s.current(); in != nil {
		return in.Engine.Metrics()
	}
	return engine.Metrics{}
}

// Close stops watching, closes the engine (cancelling its jobs) and frees
// the device.
func (s *Supervisor) Close() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	s.mu.Unlock()
	close(s.stop)
	<-s.done
	s.mu.Lock()
	in := s.cur
	s.cur = nil
	s.mu.Unlock()
	if in != nil {
		in.Engine.Close()
		in.Close()
	}
}

// Wait blocks until the supervisor serves (nil) or ctx ends.
func (s *Supervisor) Wait(ctx context.Context) error {
	for {
		if s.Health() == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}
