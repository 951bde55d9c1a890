package engine

import "fmt"

// The model's tokenizer and context, for the server's /tokenize,
// /detokenize and the limits it tells clients.

// Tokenize encodes text; addSpecial adds the BOS token where the model
// wants one.
func (e *Engine) Tokenize(text string, addSpecial bool) ([]int32, error) {
	return e.tok.Encode(text, addSpecial && e.tok.AddBOS()), nil
}

// TokenPiece is the text of one token.
func (e *Engine) TokenPiece(id int32) string { return e.tok.Piece(id) }

// Detokenize decodes token ids; an id outside the vocabulary is an error
// (ErrBadJob).
func (e *Engine) Detokenize(ids []int32) (string, error) {
	for i, id := range ids {
		if id < 0 || int(id) >= e.tok.VocabSize() {
			return "", fmt.Errorf("%w: tokens[%d] = %d is outside the vocabulary of %d tokens", ErrBadJob, i, id, e.tok.VocabSize())
		}
	}
	return e.tok.Decode(ids), nil
}

// ContextLength is the tokens one sequence holds: prompt and output.
func (e *Engine) ContextLength() int { return e.m.KV.Config().MaxSeqLen }
