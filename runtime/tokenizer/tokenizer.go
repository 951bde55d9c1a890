// Package tokenizer turns text into token ids and back for GGUF models,
// reproducing llama.cpp's tokenizers (llama-vocab.cpp) exactly:
//
//   - SentencePiece-style vocabularies (tokenizer.ggml.model = "llama"):
//     bigram merges by score, byte fallback through <0xNN> tokens, spaces
//     escaped as ▁ and a space prefixed to the text (and after every special
//     token), as llm_tokenizer_spm does.
//   - Byte-level BPE (tokenizer.ggml.model = "gpt2"): the GPT-2
//     byte↔unicode map, merge ranks, and the pre-tokenizer named by
//     tokenizer.ggml.pre (see SupportedPreTokenizers; an unknown name is an
//     error, as in llama.cpp; a missing one means "default", with a warning).
//
// Other tokenizer models (bert, t5, rwkv, plamo2, gemma4, ...) and
// pre-tokenizers not in SupportedPreTokenizers (tekken, gpt-4o,
// deepseek-v3, ...) are rejected with an error.
//
// Control, unknown and user-defined tokens written in the text are matched
// as whole tokens before normal tokenisation (llama.cpp's parse_special).
//
// Decoding follows llama_token_to_piece and llama_detokenize; see Decode,
// DecodeWith and Decoder for the exact rules.
package tokenizer

import (
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/wgllm/wgllm/runtime/gguf"
)

// TokenType is the GGUF token type (tokenizer.ggml.token_type).
type TokenType int32

const (
	TypeUndefined   TokenType = 0
	TypeNormal      TokenType = 1
	TypeUnknown     TokenType = 2
	TypeControl     TokenType = 3
	TypeUserDefined TokenType = 4
	TypeUnused      TokenType = 5
	TypeByte        TokenType = 6
)

// tokenAttr mirrors llama.cpp's llama_token_attr bit set.
type tokenAttr uint16

const (
	attrUnknown tokenAttr = 1 << iota
	attrUnused
	attrNormal
	attrControl
	attrUserDefined
	attrByte
	attrNormalized
	attrLStrip
	attrRStrip
)

func attrFromType(t int32) tokenAttr {
	switch TokenType(t) {
	case TypeNormal:
		return attrNormal
	case TypeUnknown:
		return attrUnknown
	case TypeControl:
		return attrControl
	case TypeUserDefined:
		return attrUserDefined
	case TypeUnused:
		return attrUnused
	case TypeByte:
		return attrByte
	}
	return 0
}

// Kind is the tokenizer algorithm.
type Kind int

const (
	KindSPM Kind = iota // SentencePiece-style (tokenizer.ggml.model = "llama")
	KindBPE             // byte-level BPE (tokenizer.ggml.model = "gpt2")
)

func (k Kind) String() string {
	if k == KindSPM {
		return "SPM"
	}
	return "BPE"
}

// NoToken marks an absent special token id.
const NoToken int32 = -1

type mergeKey struct{ left, right string }

// Tokenizer is immutable after FromGGUF and safe for concurrent use.
type Tokenizer struct {
	kind       Kind
	model      string
	pre        string
	texts      []string
	scores     []float32
	types      []TokenType
	attrs      []tokenAttr
	pieces     []string // llama_token_to_piece with special = true
	toID       map[string]int32
	ranks      map[mergeKey]int32   // BPE merge ranks by text, as llama.cpp keeps them
	merges     map[uint64]mergeInfo // the same for pairs of tokens, by id
	spmPairs   pairSet              // SPM: adjacent symbol pairs occurring inside tokens
	byteSymbol [256]int32           // BPE: token of the GPT-2 character of each byte
	preTok     preTokenizer
	special    []int32 // control, user-defined and unknown tokens, longest text first

	bos, eos, eot, eom, unk, sep, pad int32
	fimPad, fimRep, fimSep            int32
	eog                               map[int32]bool

	addBOS, addEOS bool
	addSpacePrefix bool
	cleanSpaces    bool
	ignoreMerges   bool

	byteTokens [256]int32 // SPM byte fallback, NoToken where the vocabulary has none
	warnings   []string
}

// metadata keys
const (
	keyModel      = "tokenizer.ggml.model"
	keyPre        = "tokenizer.ggml.pre"
	keyTokens     = "tokenizer.ggml.tokens"
	keyScores     = "tokenizer.ggml.scores"
	keyTypes      = "tokenizer.ggml.token_type"
	keyMerges     = "tokenizer.ggml.merges"
	keyAddBOS     = "tokenizer.ggml.add_bos_token"
	keyAddEOS     = "tokenizer.ggml.add_eos_token"
	keyAddPrefix  = "tokenizer.ggml.add_space_prefix"
	keyBOS        = "tokenizer.ggml.bos_token_id"
	keyEOS        = "tokenizer.ggml.eos_token_id"
	keyEOT        = "tokenizer.ggml.eot_token_id"
	keyEOM        = "tokenizer.ggml.eom_token_id"
	keyUNK        = "tokenizer.ggml.unknown_token_id"
	keySEP        = "tokenizer.ggml.seperator_token_id" // sic, as in GGUF
	keyPAD        = "tokenizer.ggml.padding_token_id"
	keyFIMPad     = "tokenizer.ggml.fim_pad_token_id"
	keyFIMRep     = "tokenizer.ggml.fim_rep_token_id"
	keyFIMSep     = "tokenizer.ggml.fim_sep_token_id"
	keyName       = "general.name"
	keyArch       = "general.architecture"
	maxVocabSize  = 1 << 24
	maxTokenBytes = 1 << 16
)

// FromGGUF builds the tokenizer described by a GGUF file's metadata.
func FromGGUF(f *gguf.File) (*Tokenizer, error) {
	if f == nil {
		return nil, errors.New("tokenizer: nil gguf file")
	}
	t := &Tokenizer{
		bos: NoToken, eos: NoToken, eot: NoToken, eom: NoToken, unk: NoToken, sep: NoToken, pad: NoToken,
		fimPad: NoToken, fimRep: NoToken, fimSep: NoToken,
	}
	model, ok := f.String(keyModel)
	if !ok {
		return nil, fmt.Errorf("tokenizer: %s is missing or not a string", keyModel)
	}
	t.model = model
	switch model {
	case "llama":
		t.kind = KindSPM
		t.bos, t.eos, t.unk = 1, 2, 0
		t.addSpacePrefix = true
		t.addBOS = true
	case "gpt2":
		t.kind = KindBPE
		t.bos, t.eos = 11, 11 // llama.cpp's defaults for BPE
		pre, ok := f.String(keyPre)
		if !ok {
			t.warnf("%s is missing: using the \"default\" pre-tokenizer; generation quality may suffer", keyPre)
			pre = "default"
		}
		p, err := lookupPreTokenizer(pre)
		if err != nil {
			return nil, err
		}
		t.pre, t.preTok = pre, p
		t.cleanSpaces, t.ignoreMerges, t.addBOS = p.cleanSpaces, p.ignoreMerges, p.addBOS
		if p.noBOS {
			t.bos = NoToken
		}
	default:
		return nil, fmt.Errorf("tokenizer: unsupported %s %q (supported: \"llama\" (SentencePiece) and \"gpt2\" (byte-level BPE))", keyModel, model)
	}
	if t.kind == KindSPM {
		t.pre, _ = f.String(keyPre)
	}
	if v, ok := f.Bool(keyAddPrefix); ok {
		t.addSpacePrefix = v
	}

	if err := t.loadVocab(f); err != nil {
		return nil, err
	}
	if t.kind == KindBPE {
		if err := t.loadMerges(f); err != nil {
			return nil, err
		}
	}
	if t.kind == KindSPM {
		t.spmPairs = buildPairSet(t.texts)
	}
	if err := t.loadSpecial(f); err != nil {
		return nil, err
	}
	t.buildPieces()
	return t, nil
}

func (t *Tokenizer) warnf(format string, a ...any) {
	t.warnings = append(t.warnings, fmt.Sprintf(format, a...))
}

func (t *Tokenizer) loadVocab(f *gguf.File) error {
	if _, ok := f.Metadata[keyTokens]; !ok {
		return fmt.Errorf("tokenizer: %s is missing", keyTokens)
	}
	texts, ok := f.Strings(keyTokens)
	if !ok {
		return fmt.Errorf("tokenizer: %s is not a string array", keyTokens)
	}
	n := len(texts)
	if n == 0 {
		return fmt.Errorf("tokenizer: %s is empty", keyTokens)
	}
	if n > maxVocabSize {
		return fmt.Errorf("tokenizer: %s has %d tokens, more than the supported %d", keyTokens, n, maxVocabSize)
	}
	var scores []float32
	if v, ok := f.Metadata[keyScores]; ok {
		switch s := v.V.(type) {
		case []float32:
			scores = s
		case []int32:
			scores = make([]float32, len(s))
			for i, x := range s {
				scores[i] = float32(x)
			}
		default:
			return fmt.Errorf("tokenizer: %s must be a float32 or int32 array, not %s", keyScores, v.Describe())
		}
		if len(scores) < n {
			return fmt.Errorf("tokenizer: %s has %d entries for %d tokens", keyScores, len(scores), n)
		}
	}
	var types []int32
	if _, ok := f.Metadata[keyTypes]; ok {
		types, ok = f.Int32s(keyTypes)
		if !ok {
			return fmt.Errorf("tokenizer: %s must be an int32 array", keyTypes)
		}
		if len(types) < n {
			return fmt.Errorf("tokenizer: %s has %d entries for %d tokens", keyTypes, len(types), n)
		}
	}

	t.texts = make([]string, n)
	t.scores = make([]float32, n)
	t.types = make([]TokenType, n)
	t.attrs = make([]tokenAttr, n)
	t.toID = make(map[string]int32, n)
	for i, s := range texts {
		if s == "" {
			t.warnf("empty token at index %d", i)
			s = fmt.Sprintf("[EMPTY_%d]", i)
		}
		if len(s) > maxTokenBytes {
			return fmt.Errorf("tokenizer: token %d is %d bytes long (limit %d)", i, len(s), maxTokenBytes)
		}
		if prev, dup := t.toID[s]; dup {
			return fmt.Errorf("tokenizer: duplicate token %q in the vocabulary (ids %d and %d)", s, prev, i)
		}
		t.toID[s] = int32(i)
		t.texts[i] = s
		if scores != nil {
			t.scores[i] = scores[i]
		}
		t.types[i] = TypeNormal
		t.attrs[i] = attrNormal
		if types != nil {
			t.types[i] = TokenType(types[i])
			t.attrs[i] = attrFromType(types[i])
		}
	}
	for b := range t.byteTokens {
		t.byteTokens[b] = NoToken
		if id, ok := t.toID[fmt.Sprintf("<0x%02X>", b)]; ok {
			t.byteTokens[b] = id
		} else if id, ok := t.toID[string([]byte{byte(b)})]; ok {
			t.byteTokens[b] = id
		}
	}
	return nil
}

func (t *Tokenizer) loadMerges(f *gguf.File) error {
	if _, ok := f.Metadata[keyMerges]; !ok {
		return fmt.Errorf("tokenizer: %s is missing (required for gpt2 vocabularies)", keyMerges)
	}
	merges, ok := f.Strings(keyMerges)
	if !ok {
		return fmt.Errorf("tokenizer: %s is not a string array", keyMerges)
	}
	t.ranks = make(map[mergeKey]int32, len(merges))
	for i, m := range merges {
		// As llama.cpp: split at the first space after the first byte; an
		// entry without one maps ("", ""); the first rank of a pair wins.
		var k mergeKey
		if j := strings.IndexByte(m[min(1, len(m)):], ' '); j >= 0 {
			j += min(1, len(m))
			k = mergeKey{m[:j], m[j+1:]}
		}
		if _, dup := t.ranks[k]; !dup {
			t.ranks[k] = int32(i)
		}
	}
	t.merges = make(map[uint64]mergeInfo, len(t.ranks))
	for k, rank := range t.ranks {
		l, okL := t.toID[k.left]
		r, okR := t.toID[k.right]
		if !okL || !okR {
			continue // found by text at encode time
		}
		res, ok := t.toID[k.left+k.right]
		if !ok {
			res = NoToken
		}
		t.merges[pairID(l, r)] = mergeInfo{rank: rank, result: res}
	}
	for b := range t.byteSymbol {
		t.byteSymbol[b] = NoToken
		if id, ok := t.toID[byteToUTF8[b]]; ok {
			t.byteSymbol[b] = id
		}
	}
	return nil
}

var (
	eotTexts = []string{"<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|end_of_text|>",
		"<EOT>", "_<EOT>", "[EOT]", "<｜end▁of▁sentence｜>", "<end_of_utterance>"}
	eomTexts    = []string{"<|eom_id|>"}
	fimPreTexts = []string{"<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>", "<｜fim▁begin｜>", "<PRE>", "▁<PRE>", "<|code_prefix|>", "<|prefix|>"}
	fimSufTexts = []string{"<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>", "<｜fim▁hole｜>", "<SUF>", "▁<SUF>", "<|code_suffix|>", "<|suffix|>"}
	fimMidTexts = []string{"<|fim_middle|>", "<fim-middle>", "<fim_middle>", "<｜fim▁end｜>", "<MID>", "▁<MID>", "<|code_middle|>", "<|middle|>"}
	fimPadTexts = []string{"<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"}
	fimRepTexts = []string{"<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>"}
	fimSepTexts = []string{"<|file_sep|>"}
	eogTexts    = []string{"<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>", "<|calls|>",
		"<end_of_turn>", "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "[EOS]", "<|end_of_text|>",
		"<end_of_utterance>", "<eos>", "<turn|>", "<|tool_response>", "<｜end▁of▁sentence｜>", "[e~["}
)

// loadSpecial reads the special token ids and derives token attributes, the
// end-of-generation set and the special-token matching order as llama.cpp's
// llama_vocab::impl::load does.
func (t *Tokenizer) loadSpecial(f *gguf.File) error {
	n := int32(len(t.texts))
	for _, s := range []struct {
		key string
		id  *int32
	}{{keyBOS, &t.bos}, {keyEOS, &t.eos}, {keyEOT, &t.eot}, {keyEOM, &t.eom}, {keyUNK, &t.unk},
		{keySEP, &t.sep}, {keyPAD, &t.pad}, {keyFIMPad, &t.fimPad}, {keyFIMRep, &t.fimRep}, {keyFIMSep, &t.fimSep}} {
		if *s.id >= n {
			t.warnf("default %s = %d is outside the vocabulary: disabled", s.key, *s.id)
			*s.id = NoToken
		}
		if _, present := f.Metadata[s.key]; !present {
			continue
		}
		v, ok := f.Uint32(s.key)
		if !ok || v >= uint32(n) {
			t.warnf("bad %s (%s): keeping %d", s.key, f.Metadata[s.key].Describe(), *s.id)
			continue
		}
		*s.id = int32(v)
	}
	if v, ok := f.Bool(keyAddBOS); ok {
		t.addBOS = v
	}
	if v, ok := f.Bool(keyAddEOS); ok {
		t.addEOS = v
	}
	if t.addBOS && t.bos == NoToken {
		return fmt.Errorf("tokenizer: %s is true but there is no %s", keyAddBOS, keyBOS)
	}
	if t.addEOS && t.eos == NoToken {
		return fmt.Errorf("tokenizer: %s is true but there is no %s", keyAddEOS, keyEOS)
	}

	// Ids found by token text: llama.cpp takes the first hit of a hash-map
	// walk; the lowest matching id is used here so the result is stable.
	markControl := func(id int32) {
		if t.attrs[id]&attrControl == 0 {
			t.warnf("token %d %q looks like a control token but is not typed as one: treating it as control", id, t.texts[id])
			t.attrs[id] |= attrControl
		}
	}
	detect := func(id *int32, texts []string) {
		if *id != NoToken {
			return
		}
		best := NoToken
		for _, s := range texts {
			if i, ok := t.toID[s]; ok && (best == NoToken || i < best) {
				best = i
			}
		}
		if best != NoToken {
			*id = best
			markControl(best)
		}
	}
	detect(&t.eot, eotTexts)
	detect(&t.eom, eomTexts)
	var fimPre, fimSuf, fimMid = NoToken, NoToken, NoToken
	detect(&fimPre, fimPreTexts)
	detect(&fimSuf, fimSufTexts)
	detect(&fimMid, fimMidTexts)
	detect(&t.fimPad, fimPadTexts)
	detect(&t.fimRep, fimRepTexts)
	detect(&t.fimSep, fimSepTexts)

	for id, a := range t.attrs {
		if a&attrControl != 0 && strings.Contains(t.texts[id], "unused") {
			t.attrs[id] |= attrUnused
		}
	}

	t.eog = map[int32]bool{}
	for _, id := range []int32{t.fimPad, t.fimRep, t.fimSep} {
		if id != NoToken {
			t.eog[id] = true
		}
	}
	for _, s := range eogTexts {
		if id, ok := t.toID[s]; ok {
			t.eog[id] = true
			markControl(id)
		}
	}
	// gpt-oss: these are always rendered.
	for _, s := range []string{"<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"} {
		if id, ok := t.toID[s]; ok {
			t.attrs[id] = attrUserDefined
		}
	}
	for _, id := range []int32{t.eos, t.eot, t.eom} {
		if id != NoToken {
			t.eog[id] = true
		}
	}
	// o200k_harmony / solar-open: <|end|> is not an end of generation there.
	has := func(s string) bool { id, ok := t.toID[s]; return ok && t.eog[id] }
	if has("<|end|>") && ((has("<|return|>") && (has("<|call|>") || has("<|calls|>"))) ||
		((has("<|call|>") || has("<|calls|>")) && has("<|flush|>"))) {
		id := t.toID["<|end|>"]
		delete(t.eog, id)
		t.attrs[id] = attrUserDefined
	}
	// gemma4 / paddleocr: </s> is not an end of generation there.
	if has("<|tool_response>") && has("</s>") {
		id := t.toID["</s>"]
		delete(t.eog, id)
		t.attrs[id] = attrNormal
	}

	for id, a := range t.attrs {
		if a&(attrControl|attrUserDefined|attrUnknown) != 0 {
			t.special = append(t.special, int32(id))
		}
	}
	// Longest first, as llama.cpp; ties (unordered there) by id.
	sort.SliceStable(t.special, func(i, j int) bool {
		return len(t.texts[t.special[i]]) > len(t.texts[t.special[j]])
	})

	// Per-model strip attributes that llama.cpp sets by name.
	name, _ := f.String(keyName)
	name = strings.ToLower(name)
	arch, _ := f.String(keyArch)
	setAttr := func(text string, a tokenAttr, on bool) {
		if id, ok := t.toID[text]; ok {
			if on {
				t.attrs[id] |= a
			} else {
				t.attrs[id] &^= a
			}
		}
	}
	switch {
	case containsAny(t.pre, "jina-v2-de", "jina-v2-es", "jina-v2-code") || containsAny(arch, "nomic-bert-moe", "jina-bert-v3"):
		setAttr("<mask>", attrLStrip, true)
	case containsAny(name, "phi-3", "phi3"):
		for _, id := range t.special {
			t.attrs[id] |= attrRStrip
		}
		setAttr("</s>", attrRStrip, true)
		for _, s := range []string{"<unk>", "<s>", "<|endoftext|>"} {
			setAttr(s, attrRStrip, false)
		}
	case containsAny(name, "modern-bert"):
		setAttr("[MASK]", attrLStrip, true)
	}
	return nil
}

func containsAny(s string, subs ...string) bool {
	for _, sub := range subs {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}

// Model returns tokenizer.ggml.model ("llama" or "gpt2").
func (t *Tokenizer) Model() string { return t.model }

// Kind returns the tokenizer algorithm.
func (t *Tokenizer) Kind() Kind { return t.kind }

// Pre returns tokenizer.ggml.pre ("default" for a BPE vocabulary without one).
func (t *Tokenizer) Pre() string { return t.pre }

// VocabSize is the number of tokens.
func (t *Tokenizer) VocabSize() int { return len(t.texts) }

// BOS, EOS, EOT, EOM, Unknown, Separator and Padding return special token ids, NoToken when absent.
func (t *Tokenizer) BOS() int32       { return t.bos }
func (t *Tokenizer) EOS() int32       { return t.eos }
func (t *Tokenizer) EOT() int32       { return t.eot }
func (t *Tokenizer) EOM() int32       { return t.eom }
func (t *Tokenizer) Unknown() int32   { return t.unk }
func (t *Tokenizer) Separator() int32 { return t.sep }
func (t *Tokenizer) Padding() int32   { return t.pad }

// AddBOS reports whether the model wants a BOS token before a prompt
// (tokenizer.ggml.add_bos_token, else llama.cpp's default for the vocabulary).
func (t *Tokenizer) AddBOS() bool { return t.addBOS }

// AddEOS reports whether the model wants an EOS token after a prompt.
func (t *Tokenizer) AddEOS() bool { return t.addEOS }

// CleanSpaces reports whether llama.cpp would clean up spaces when
// detokenizing this vocabulary (see DecodeOptions.CleanSpaces).
func (t *Tokenizer) CleanSpaces() bool { return t.cleanSpaces }

// IsEOG reports whether id ends generation (EOS, EOT, EOM and the tokens
// llama.cpp recognises by text, e.g. <|im_end|>, <|eot_id|>, <end_of_turn>).
func (t *Tokenizer) IsEOG(id int32) bool { return id != NoToken && t.eog[id] }

// EOGTokens returns the end-of-generation ids in increasing order.
func (t *Tokenizer) EOGTokens() []int32 {
	ids := make([]int32, 0, len(t.eog))
	for id := range t.eog {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	return ids
}

// TokenText returns the vocabulary string of id ("" if id is out of range).
func (t *Tokenizer) TokenText(id int32) string {
	if id < 0 || int(id) >= len(t.texts) {
		return ""
	}
	return t.texts[id]
}

// TokenType returns the GGUF type of id (TypeUndefined if out of range).
func (t *Tokenizer) TokenType(id int32) TokenType {
	if id < 0 || int(id) >= len(t.types) {
		return TypeUndefined
	}
	return t.types[id]
}

// Score returns the SentencePiece score of id (0 without scores or out of range).
func (t *Tokenizer) Score(id int32) float32 {
	if id < 0 || int(id) >= len(t.scores) {
		return 0
	}
	return t.scores[id]
}

// TokenID returns the id of an exact vocabulary string.
func (t *Tokenizer) TokenID(text string) (int32, bool) {
	id, ok := t.toID[text]
	return id, ok
}

// Warnings returns what FromGGUF found odd but tolerated, as llama.cpp logs it.
func (t *Tokenizer) Warnings() []string { return append([]string(nil), t.warnings...) }
