package supervisor

import "github.com/wgllm/wgllm/runtime/engine"

// Tokenize encodes with the current engine's tokenizer.
func (s *Supervisor) Tokenize(text string, addSpecial bool) ([]int32, error) {
	if in := s.current(); in != nil {
		return in.Engine.Tokenize(text, addSpecial)
	}
	return nil, engine.ErrNotReady
}

// TokenPiece is the text of one token ("" while recovering).
func (s *Supervisor) TokenPiece(id int32) string {
	if in := s.current(); in != nil {
		return in.Engine.TokenPiece(id)
	}
	return ""
}

// Detokenize decodes token ids.
func (s *Supervisor) Detokenize(ids []int32) (string, error) {
	if in := s.current(); in != nil {
		return in.Engine.Detokenize(ids)
	}
	return "", engine.ErrNotReady
}

// ContextLength of the current engine (0 while recovering).
func (s *Supervisor) ContextLength() int {
	if in := s.current(); in != nil {
		return in.Engine.ContextLength()
	}
	return 0
}
