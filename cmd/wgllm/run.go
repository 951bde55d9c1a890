package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"

	"github.com/mattn/go-isatty"
	"github.com/spf13/cobra"
	"github.com/wgllm/wgllm/runtime/chat"
	"github.com/wgllm/wgllm/runtime/engine"
	"github.com/wgllm/wgllm/runtime/sample"
)

func runCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "run -m MODEL [-p PROMPT]",
		Short: "Chat with a model, or continue a prompt (-p); stdout gets only the model's text, streamed",
		Long: `Two modes:

  wgllm run -m MODEL -p PROMPT     continues PROMPT as raw text (no chat template) and exits.
  wgllm run -m MODEL               chats: each line you type is a user turn, rendered with the
                                   model's chat template (ChatML when the model has none) together
                                   with the conversation so far; the reply streams to stdout.

In a chat, a message of several lines goes between two """ lines; /set system TEXT sets the
system prompt, /clear forgets the conversation, /? lists the commands, /bye or Ctrl-D ends it.
Ctrl-C stops a reply; twice at the prompt it ends the chat. A reasoning model's thinking
(Qwen3's <think>, gpt-oss's analysis channel) goes to stderr, dimmed on a terminal, and is
hidden with --hide-thinking; --think=false asks the template not to think at all.

When stdin is not a terminal and there is no -p, all of stdin is one user message: the reply is
printed and run exits (echo hi | wgllm run -m MODEL); --interactive reads it turn by turn
instead. --chat -p PROMPT sends PROMPT as one chat turn. --log-level debug logs each turn's
rendered prompt and its token counts (cached_tokens: the prefix reused from the previous turn).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f := cmd.Flags()
			prompt, _ := f.GetString("prompt")
			n, _ := f.GetInt("n-predict")
			ctxLen, _ := f.GetInt("ctx-size")
			p := sample.DefaultParams()
			p.Temperature, _ = f.GetFloat32("temp")
			p.TopK, _ = f.GetInt("top-k")
			p.TopP, _ = f.GetFloat32("top-p")
			p.MinP, _ = f.GetFloat32("min-p")
			p.RepeatPenalty, _ = f.GetFloat32("repeat-penalty")
			p.Seed, _ = f.GetUint64("seed")
			if err := p.Validate(); err != nil {
				return err
			}
			asChat, _ := f.GetBool("chat")
			if prompt != "" && !asChat {
				return a.runRaw(cmd, ctxLen, engine.Request{Prompt: prompt, MaxTokens: n, Sampling: p})
			}
			if !f.Changed("n-predict") {
				n = 0 // a chat reply ends at its end of turn, or the context's end
			}
			return a.runChat(cmd, ctxLen, engine.Job{MaxTokens: n, Sampling: p}, prompt)
		},
	}
	addModelFlags(cmd)
	f := cmd.Flags()
	f.StringP("prompt", "p", "", "prompt text, continued as raw text (with --chat: sent as one chat turn)")
	f.IntP("n-predict", "n", 128, "most tokens to generate (a chat reply: no limit unless given)")
	f.Float32("temp", 0.8, "temperature (0: greedy)")
	f.Uint64("seed", 0, "random seed (same seed and settings give the same text)")
	f.Int("top-k", 40, "top-k (0: off)")
	f.Float32("top-p", 0.95, "top-p (1: off)")
	f.Float32("min-p", 0.05, "min-p (0: off)")
	f.Float32("repeat-penalty", 1.0, "repetition penalty (1: off)")
	f.Bool("chat", false, "with -p: send the prompt as one chat turn, print the reply and exit")
	f.String("system", "", "chat: the system prompt")
	f.Bool("think", true, "chat: let a reasoning model think (false: ask its template not to)")
	f.Bool("hide-thinking", false, "chat: do not show the model's reasoning")
	f.BoolP("interactive", "i", false, "chat turn by turn even when stdin is not a terminal")
	return cmd
}

// runRaw continues req.Prompt as raw text: stdout gets only the
// generated text, streamed.
func (a *app) runRaw(cmd *cobra.Command, ctxLen int, req engine.Request) error {
	l, err := a.load(cmd, ctxLen)
	if err != nil {
		return err
	}
	defer l.Close()
	out := bufio.NewWriter(os.Stdout)
	st, err := l.gen.Generate(req, func(s string) error {
		if _, err := out.WriteString(s); err != nil {
			return err
		}
		return out.Flush() // streamed as produced
	})
	if ferr := out.Flush(); err == nil {
		err = ferr
	}
	if err != nil {
		return err
	}
	fmt.Fprintln(os.Stdout)
	a.log.Info().Int("prompt_tokens", st.PromptTokens).Int("completion_tokens", st.CompletionTokens).
		Str("finish_reason", st.FinishReason).
		Float64("prefill_tok_s", float64(st.PromptTokens)/st.Prefill.Seconds()).
		Float64("decode_tok_s", float64(st.CompletionTokens)/st.Decode.Seconds()).Msg("done")
	return nil
}

// runChat chats with the model: one turn (prompt, or all of a piped
// stdin) or, on a terminal or with --interactive, turn by turn.
func (a *app) runChat(cmd *cobra.Command, ctxLen int, settings engine.Job, prompt string) error {
	f := cmd.Flags()
	interactive, _ := f.GetBool("interactive")
	stdinTerminal := isatty.IsTerminal(os.Stdin.Fd())
	oneTurn := prompt != "" || (!stdinTerminal && !interactive)
	if oneTurn && prompt == "" {
		in, err := io.ReadAll(os.Stdin)
		if err != nil {
			return fmt.Errorf("reading stdin: %w", err)
		}
		if prompt = strings.TrimSpace(string(in)); prompt == "" {
			return errors.New("no message: stdin was empty (pass -p PROMPT, or type on a terminal)")
		}
	}
	l, err := a.load(cmd, ctxLen)
	if err != nil {
		return err
	}
	defer l.Close()
	tmpl, err := chat.FromGGUF(l.file)
	if err != nil {
		return err
	}
	if tmpl.IsFallback() {
		a.log.Warn().Msg("the model has no chat template: chatting in ChatML, which it may not have been trained on")
	}
	eng, err := engine.NewEngine(l.m, l.tok, engine.Options{MaxBatch: 1, QueueLimit: 1, StepTokens: l.m.Batch(),
		ChatStop: tmpl.StopStrings(), RenderChat: engine.TemplateRenderer(tmpl), Log: a.log})
	if err != nil {
		return err
	}
	defer eng.Close()
	// Ctrl-C stops a reply rather than the process.
	interrupts := make(chan os.Signal, 1)
	signal.Notify(interrupts, os.Interrupt)
	defer signal.Stop(interrupts)
	s := &chatSession{eng: eng, log: a.log, settings: settings, out: os.Stdout, thinkOut: os.Stderr,
		interrupts: interrupts, dim: isatty.IsTerminal(os.Stderr.Fd())}
	s.system, _ = f.GetString("system")
	hide, _ := f.GetBool("hide-thinking")
	s.showThinking = !hide
	if f.Changed("think") {
		think, _ := f.GetBool("think")
		s.think = &think
		s.showThinking = s.showThinking && think
	}
	if oneTurn {
		return s.turn(prompt)
	}
	var promptTo io.Writer
	if stdinTerminal {
		promptTo = os.Stderr
	}
	return s.loop(newTurnReader(os.Stdin, promptTo), stdinTerminal)
}

// loop runs turns until /bye or the end of the input. A Ctrl-C at the
// prompt only warns; a second one in a row ends the chat.
func (s *chatSession) loop(r *turnReader, terminal bool) error {
	turns := startTurns(r)
	defer close(turns.ask)
	for {
		turns.ask <- struct{}{}
		var in turnOrErr
		for interrupted := false; ; {
			select {
			case in = <-turns.got:
			case <-s.interrupts:
				if interrupted {
					fmt.Fprintln(s.thinkOut)
					return nil
				}
				interrupted = true
				fmt.Fprint(s.thinkOut, "\nUse Ctrl-D or /bye to end the chat (Ctrl-C again ends it now).\n>>> ")
				continue
			}
			break
		}
		if errors.Is(in.err, io.EOF) {
			if terminal {
				fmt.Fprintln(s.thinkOut)
			}
			return nil
		}
		if in.err != nil {
			return fmt.Errorf("reading stdin: %w", in.err)
		}
		text := strings.TrimSpace(in.text)
		switch {
		case text == "":
			continue
		case strings.HasPrefix(text, "/"):
			if s.command(text) {
				return nil
			}
			continue
		}
		err := s.turn(text)
		if errors.Is(err, errContextFull) {
			fmt.Fprintln(s.thinkOut, err)
			continue
		}
		if err != nil {
			return err
		}
		if terminal {
			fmt.Fprintln(s.thinkOut)
		}
	}
}
