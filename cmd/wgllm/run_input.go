package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strings"
)

// multiline opens and closes a message of several lines, as in Ollama.
const multiline = `"""`

// turnReader reads the user's turns: a line each, or the lines between
// two """ marks. With prompt set (stdin is a terminal) it writes the
// prompt before each line.
type turnReader struct {
	r      *bufio.Reader
	prompt io.Writer
}

func newTurnReader(r io.Reader, prompt io.Writer) *turnReader {
	return &turnReader{r: bufio.NewReader(r), prompt: prompt}
}

// next returns the next turn, io.EOF at the end of the input. A message
// of several lines left open at the end is sent as it stands.
func (t *turnReader) next() (string, error) {
	line, err := t.line(">>> ")
	if err != nil {
		return "", err
	}
	rest, ok := strings.CutPrefix(strings.TrimLeft(line, " \t"), multiline)
	if !ok {
		return line, nil
	}
	var lines []string
	for {
		text, closed := strings.CutSuffix(strings.TrimRight(rest, " \t"), multiline)
		if closed {
			rest = text
		}
		if rest != "" || (len(lines) > 0 && !closed) {
			lines = append(lines, rest)
		}
		if closed {
			return strings.Join(lines, "\n"), nil
		}
		if rest, err = t.line("... "); errors.Is(err, io.EOF) {
			return strings.Join(lines, "\n"), nil
		} else if err != nil {
			return "", err
		}
	}
}

// line reads one line without its end; io.EOF only when nothing is left.
func (t *turnReader) line(prompt string) (string, error) {
	if t.prompt != nil {
		fmt.Fprint(t.prompt, prompt)
	}
	s, err := t.r.ReadString('\n')
	if errors.Is(err, io.EOF) && s != "" {
		err = nil
	}
	return strings.TrimSuffix(strings.TrimSuffix(s, "\n"), "\r"), err
}

// asyncTurns reads turns on a goroutine, one each time it is asked, so
// the loop can wait for a turn and for Ctrl-C together.
type asyncTurns struct {
	ask chan struct{}
	got chan turnOrErr
}

type turnOrErr struct {
	text string
	err  error
}

func startTurns(t *turnReader) *asyncTurns {
	a := &asyncTurns{ask: make(chan struct{}), got: make(chan turnOrErr)}
	go func() {
		for range a.ask {
			text, err := t.next()
			a.got <- turnOrErr{text, err}
			if err != nil {
				return
			}
		}
	}()
	return a
}
