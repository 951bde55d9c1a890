package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/rs/zerolog"
	"github.com/wgllm/wgllm/runtime/chat"
	"github.com/wgllm/wgllm/runtime/engine"
)

// chatSession is a conversation with a model from the terminal, rendered
// with the model's chat template as the server renders it. Its engine
// has one sequence slot and lives as long as the session, so each turn's
// prompt (the previous prompt, the reply and the new turn) prefills only
// what the slot's cache does not hold already.
type chatSession struct {
	eng      *engine.Engine
	log      zerolog.Logger
	settings engine.Job // MaxTokens and Sampling of every reply
	system   string
	history  []chat.Message
	think    *bool // nil: the template's default
	// showThinking writes the reasoning to thinkOut, dimmed when dim.
	showThinking bool
	dim          bool
	out          io.Writer // the answer
	thinkOut     io.Writer // the reasoning, and the session's messages
	interrupts   <-chan os.Signal
}

// errContextFull is a conversation that no longer fits the context.
var errContextFull = errors.New("the conversation no longer fits the context: /clear starts a new one")

// messages is the conversation so far with the next user turn.
func (s *chatSession) messages(user string) []chat.Message {
	msgs := make([]chat.Message, 0, len(s.history)+2)
	if s.system != "" {
		msgs = append(msgs, chat.Message{Role: "system", Content: s.system})
	}
	msgs = append(msgs, s.history...)
	return append(msgs, chat.Message{Role: "user", Content: user})
}

// turn sends user's message, streams the reply and adds both to the
// history. An interrupt stops the reply; what came of it is kept.
func (s *chatSession) turn(user string) error {
	rendered, err := s.eng.RenderChat(chat.Conversation{Messages: s.messages(user), Thinking: s.think})
	if err != nil {
		return fmt.Errorf("rendering the chat template: %w", err)
	}
	s.log.Debug().Str("prompt", rendered.Prompt).Int("messages", len(s.history)+1).Msg("chat prompt")
	job := s.settings
	job.Prompt, job.Chat = rendered.Prompt, true
	events := make(chan engine.Event, 64)
	id, err := s.eng.Submit(job, func(ev engine.Event) { events <- ev })
	if errors.Is(err, engine.ErrPromptTooLong) {
		return errContextFull
	}
	if err != nil {
		return err
	}
	w := replyWriter{s: s, parser: chat.NewOutputParser(rendered.Format, false, rendered.Format.OpensThinking(rendered.Prompt))}
	for {
		select {
		case <-s.interrupts:
			s.eng.Cancel(id) // the final event follows
		case ev := <-events:
			if !ev.Done {
				if err := w.parts(w.parser.Feed(ev.Text)); err != nil {
					s.eng.Cancel(id)
				}
				continue
			}
			w.parts(w.parser.Finish())
			werr := w.end()
			s.log.Debug().Int("prompt_tokens", ev.Usage.PromptTokens).Int("cached_tokens", ev.Usage.CachedTokens).
				Int("completion_tokens", ev.Usage.CompletionTokens).Str("finish_reason", ev.FinishReason).
				Float64("prompt_tok_s", ev.Timings.PromptPerSecond).Float64("decode_tok_s", ev.Timings.TokensPerSecond).
				Msg("reply done")
			if ev.Err != nil {
				return ev.Err
			}
			if werr != nil {
				return werr
			}
			if ev.FinishReason == "cancelled" && w.content.Len() == 0 {
				return nil // nothing said: the turn is forgotten
			}
			s.history = append(s.history, chat.Message{Role: "user", Content: user},
				chat.Message{Role: "assistant", Content: w.content.String(), Reasoning: w.reasoning.String()})
			return nil
		}
	}
}

// replyWriter streams a reply's parts: the answer to out, the reasoning
// to thinkOut (or nowhere).
type replyWriter struct {
	s                  *chatSession
	parser             *chat.OutputParser
	content, reasoning strings.Builder
	thinking           bool // the reasoning is being written
	err                error
}

const (
	ansiDim   = "\x1b[2m"
	ansiReset = "\x1b[0m"
)

func (w *replyWriter) parts(parts []chat.Part) error {
	for _, p := range parts {
		if p.Reasoning != "" {
			w.reasoning.WriteString(p.Reasoning)
			if w.s.showThinking {
				if !w.thinking && w.s.dim {
					w.write(w.s.thinkOut, ansiDim)
				}
				w.thinking = true
				w.write(w.s.thinkOut, p.Reasoning)
			}
		}
		if p.Content != "" {
			w.endThinking()
			// The answer starts after the reasoning's blank line.
			text := p.Content
			if w.content.Len() == 0 {
				text = strings.TrimLeft(text, "\n")
			}
			w.content.WriteString(text)
			w.write(w.s.out, text)
		}
	}
	return w.err
}

// endThinking closes the reasoning's dimmed block.
func (w *replyWriter) endThinking() {
	if !w.thinking {
		return
	}
	w.thinking = false
	if w.s.dim {
		w.write(w.s.thinkOut, ansiReset)
	}
	w.write(w.s.thinkOut, "\n\n")
}

// end finishes the reply with a newline.
func (w *replyWriter) end() error {
	w.endThinking()
	w.write(w.s.out, "\n")
	return w.err
}

// write keeps the first error: a closed stdout ends the reply.
func (w *replyWriter) write(to io.Writer, text string) {
	if w.err == nil {
		_, w.err = io.WriteString(to, text)
	}
}

// command runs a /command of the interactive loop; quit ends the loop.
func (s *chatSession) command(line string) (quit bool) {
	name, arg, _ := strings.Cut(strings.TrimSpace(line), " ")
	switch name {
	case "/bye", "/exit":
		return true
	case "/clear":
		s.history = nil
		fmt.Fprintln(s.thinkOut, "Cleared the conversation.")
	case "/set":
		what, text, _ := strings.Cut(strings.TrimSpace(arg), " ")
		if what != "system" {
			fmt.Fprintln(s.thinkOut, "Usage: /set system TEXT")
			return false
		}
		s.system = strings.TrimSpace(text)
		fmt.Fprintln(s.thinkOut, "Set the system prompt.")
	case "/?", "/help":
		fmt.Fprint(s.thinkOut, chatHelp)
	default:
		fmt.Fprintf(s.thinkOut, "Unknown command %q: /? lists the commands.\n", name)
	}
	return false
}

const chatHelp = `Commands:
  /set system TEXT   set the system prompt (empty: none)
  /clear             forget the conversation (the system prompt stays)
  /bye               end the chat (also Ctrl-D)
  /?                 this help
Ctrl-C stops a reply; Ctrl-C twice at the prompt ends the chat.
Begin and end a message of several lines with """.
`
