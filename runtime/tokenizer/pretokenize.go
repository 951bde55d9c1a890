package tokenizer

import (
	"fmt"
	"sort"
	"strings"
)

// Pre-tokenization splits text into words before BPE merges, as llama.cpp's
// unicode_regex_split does with the regex list of the vocabulary's
// tokenizer.ggml.pre. Go's regexp has no lookahead, so every regex used here
// is hand-written: each step refines the current chunks (a regex never sees
// across a chunk boundary) and, like std::regex_iterator, text between two
// matches becomes a chunk of its own. llama.cpp matches some regexes with
// std::regex over a "collapsed" text in which every non-ASCII code point is
// replaced by a byte standing for its class (and non-ASCII whitespace by \v);
// the helpers below work on classes directly, which is equivalent for the
// classes these regexes use (\p{L}, \p{N}, \p{P}, \s).

// splitStep refines chunks (lengths in code points, summing to len(cps)) and
// appends the new chunk lengths to out.
type splitStep func(cps []rune, chunks []int, out []int) []int

// preTokenizer describes one tokenizer.ggml.pre value.
type preTokenizer struct {
	steps        []splitStep
	cleanSpaces  bool // llama.cpp's clean_spaces (clean_up_tokenization_spaces) for detokenize
	ignoreMerges bool // a word that is a whole token is emitted without merging
	addBOS       bool // default for add_bos when the metadata does not say
	noBOS        bool // the vocabulary has no BOS by default
}

// Regex lists, named after llama.cpp's LLAMA_VOCAB_PRE_TYPE_*; the comment on
// each step is the regex it implements.
var (
	stepsGPT2 = []splitStep{
		splitGPT2, // 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)
	}
	stepsLlama3 = []splitStep{
		// (?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
		func(cps []rune, chunks, out []int) []int { return splitLlama3(cps, chunks, out, 3) },
	}
	stepsQwen2 = []splitStep{
		// as Llama 3 with \p{N} in place of \p{N}{1,3}
		func(cps []rune, chunks, out []int) []int { return splitLlama3(cps, chunks, out, 1) },
	}
	stepsDeepseekLLM = []splitStep{
		searchStep(matchNewline),                                                  // [\r\n]
		searchStep(optionalSpaceThen(isDeepseekLetter)),                           // \s?[A-Za-zµÀ-ÖØ-öø-ƺ...]+
		searchStep(optionalSpaceThen(isDeepseekPunct)),                            // \s?[!-/:-~！-／：-～‘-‟　-。]+
		splitTrailingSpace,                                                        // \s+$
		searchStep(runOf(isDeepseekCJK)),                                          // [一-龥ࠀ-一가-퟿]+
		searchStep(runOf(func(r rune) bool { return classOf(r) == classNumber })), // \p{N}+
	}
	stepsDeepseekCoder = []splitStep{
		searchStep(matchNewline), // [\r\n]
		searchStep(optionalSpaceThen(func(r rune) bool { return classOf(r) == classLetter })), // \s?\p{L}+
		searchStep(optionalSpaceThen(func(r rune) bool { return classOf(r) == classPunct })),  // \s?\p{P}+
		searchStep(runOf(isDeepseekCJK)), // [一-龥ࠀ-一가-퟿]+
		searchStep(matchOneNumber),       // \p{N}
	}
	stepsFalcon = []splitStep{
		searchStep(runOf(func(r rune) bool { return classOf(r) == classPunct || strings.ContainsRune("$+<=>^~|`", r) })), // [\p{P}\$\+<=>\^~\|`]+
		splitGPT2,                         // the GPT-2 regex
		searchStep(matchThreeASCIIDigits), // [0-9][0-9][0-9]
	}
	stepsStarcoder = []splitStep{
		searchStep(matchOneNumber), // \p{N}
		splitGPT2,                  // the GPT-2 regex
	}
	stepsDefault = []splitStep{
		searchStep(runOf(func(r rune) bool { return classOf(r) == classPunct || strings.ContainsRune("$+<=>^~|", r) })), // [\p{P}\$\+<=>\^~\|]+
		splitGPT2, // the GPT-2 regex
		searchStep(runOf(func(r rune) bool { return classOf(r) == classNumber })), // \p{N}+
		searchStep(matchThreeASCIIDigits),                                         // [0-9][0-9][0-9]
	}
)

// preTokenizers maps tokenizer.ggml.pre values to llama.cpp's settings for
// them (llama_vocab::impl::load). BPE vocabularies default to clean_spaces.
var preTokenizers = map[string]preTokenizer{
	"default": {steps: stepsDefault, cleanSpaces: true},

	"gpt-2":           {steps: stepsGPT2, cleanSpaces: true},
	"phi-2":           {steps: stepsGPT2, cleanSpaces: true},
	"mpt":             {steps: stepsGPT2, cleanSpaces: true},
	"olmo":            {steps: stepsGPT2, cleanSpaces: true},
	"jais":            {steps: stepsGPT2, cleanSpaces: true},
	"exaone4":         {steps: stepsGPT2, cleanSpaces: true},
	"gigachat":        {steps: stepsGPT2, cleanSpaces: true},
	"trillion":        {steps: stepsGPT2},
	"granite-docling": {steps: stepsGPT2},
	// Not a name llama.cpp knows: GPT-NeoX tokenizers (Pythia, MPT, OLMo)
	// use the GPT-2 byte-level regex, which is what llama.cpp applies to
	// "mpt" and "olmo".
	"gpt-neox": {steps: stepsGPT2, cleanSpaces: true},

	"llama3":      {steps: stepsLlama3, cleanSpaces: true, ignoreMerges: true, addBOS: true},
	"llama-v3":    {steps: stepsLlama3, cleanSpaces: true, ignoreMerges: true, addBOS: true},
	"llama-bpe":   {steps: stepsLlama3, cleanSpaces: true, ignoreMerges: true, addBOS: true},
	"falcon3":     {steps: stepsLlama3, cleanSpaces: true, ignoreMerges: true, addBOS: true},
	"falcon-h1":   {steps: stepsLlama3, cleanSpaces: true, ignoreMerges: true, addBOS: true},
	"pixtral":     {steps: stepsLlama3, cleanSpaces: true, ignoreMerges: true, addBOS: true},
	"midm-2.0":    {steps: stepsLlama3, cleanSpaces: true, ignoreMerges: true, addBOS: true},
	"lfm2":        {steps: stepsLlama3, cleanSpaces: true, ignoreMerges: true, addBOS: true},
	"dbrx":        {steps: stepsLlama3, cleanSpaces: true},
	"smaug-bpe":   {steps: stepsLlama3, cleanSpaces: true},
	"glm4":        {steps: stepsLlama3, cleanSpaces: true, noBOS: true},
	"chatglm-bpe": {steps: stepsLlama3, cleanSpaces: true, noBOS: true},

	"qwen2":            {steps: stepsQwen2},
	"deepseek-r1-qwen": {steps: stepsQwen2},
	"kormo":            {steps: stepsQwen2},
	"f2llmv2":          {steps: stepsQwen2},
	"hunyuan":          {steps: stepsQwen2},
	"solar-open":       {steps: stepsQwen2},
	"megrez":           {steps: stepsQwen2, cleanSpaces: true},
	"stablelm2":        {steps: stepsQwen2, cleanSpaces: true},

	"deepseek-llm":   {steps: stepsDeepseekLLM},
	"deepseek-coder": {steps: stepsDeepseekCoder},

	"falcon": {steps: stepsFalcon, cleanSpaces: true},

	"starcoder":  {steps: stepsStarcoder, cleanSpaces: true},
	"refact":     {steps: stepsStarcoder, cleanSpaces: true},
	"codeshell":  {steps: stepsStarcoder, cleanSpaces: true},
	"exaone":     {steps: stepsStarcoder, cleanSpaces: true},
	"minerva-7b": {steps: stepsStarcoder, cleanSpaces: true},
	"mellum2":    {steps: stepsStarcoder, cleanSpaces: true},
	"command-r":  {steps: stepsStarcoder},
	"smollm":     {steps: stepsStarcoder},
}

// SupportedPreTokenizers lists the tokenizer.ggml.pre values FromGGUF accepts.
func SupportedPreTokenizers() []string {
	names := make([]string, 0, len(preTokenizers))
	for n := range preTokenizers {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

func lookupPreTokenizer(name string) (preTokenizer, error) {
	p, ok := preTokenizers[name]
	if !ok {
		return preTokenizer{}, fmt.Errorf("tokenizer: unknown pre-tokenizer tokenizer.ggml.pre=%q (supported: %s)",
			name, strings.Join(SupportedPreTokenizers(), ", "))
	}
	return p, nil
}

// pretokenize runs the steps over cps and returns the chunk lengths.
func pretokenize(steps []splitStep, cps []rune, bufA, bufB []int) []int {
	chunks := append(bufA[:0], len(cps))
	if len(cps) == 0 {
		return chunks[:0]
	}
	for _, step := range steps {
		next := step(cps, chunks, bufB[:0])
		chunks, bufB = next, chunks
	}
	return chunks
}

// cpFlags mirrors llama.cpp's unicode_cpt_flags as the custom splitters use
// it; the zero value stands for a position outside the chunk.
type cpFlags struct {
	class   cpClass
	space   bool
	inRange bool
}

func (f cpFlags) letter() bool { return f.inRange && f.class == classLetter }
func (f cpFlags) number() bool { return f.inRange && f.class == classNumber }

// wordChunk is a chunk's view for the ported custom splitters.
type wordChunk struct {
	cps      []rune
	ini, end int
	prev     int
	out      []int
}

const outOfRange = -1

func (c *wordChunk) cp(pos int) rune {
	if pos >= c.ini && pos < c.end {
		return c.cps[pos]
	}
	return outOfRange
}

func (c *wordChunk) flags(pos int) cpFlags {
	if pos >= c.ini && pos < c.end {
		r := c.cps[pos]
		return cpFlags{class: classOf(r), space: isWhitespace(r), inRange: true}
	}
	return cpFlags{}
}

func (c *wordChunk) add(end int) int {
	n := end - c.prev
	if n > 0 {
		c.out = append(c.out, n)
	}
	c.prev = end
	return n
}

// splitGPT2 is llama.cpp's unicode_regex_split_custom_gpt2.
func splitGPT2(cps []rune, chunks []int, out []int) []int {
	start := 0
	for _, n := range chunks {
		c := wordChunk{cps: cps, ini: start, end: start + n, prev: start, out: out}
		start += n
		for pos := c.ini; pos < c.end; {
			r := c.cp(pos)
			f := c.flags(pos)
			// 's|'t|'re|'ve|'m|'ll|'d
			if r == '\'' && pos+1 < c.end {
				next := c.cp(pos + 1)
				if next == 's' || next == 't' || next == 'm' || next == 'd' {
					pos += c.add(pos + 2)
					continue
				}
				if pos+2 < c.end {
					next2 := c.cp(pos + 2)
					if (next == 'r' && next2 == 'e') || (next == 'v' && next2 == 'e') || (next == 'l' && next2 == 'l') {
						pos += c.add(pos + 3)
						continue
					}
				}
			}
			f2 := f
			if r == ' ' {
				f2 = c.flags(pos + 1)
			}
			// ' ?\p{L}+'
			if f2.letter() {
				if r == ' ' {
					pos++
				}
				for f2.letter() {
					pos++
					f2 = c.flags(pos)
				}
				c.add(pos)
				continue
			}
			// ' ?\p{N}+'
			if f2.number() {
				if r == ' ' {
					pos++
				}
				for f2.number() {
					pos++
					f2 = c.flags(pos)
				}
				c.add(pos)
				continue
			}
			// ' ?[^\s\p{L}\p{N}]+'
			if !(f2.space || f2.letter() || f2.number()) && f2.inRange {
				if r == ' ' {
					pos++
				}
				for !(f2.space || f2.letter() || f2.number()) && f2.inRange {
					pos++
					f2 = c.flags(pos)
				}
				c.add(pos)
				continue
			}
			spaces := 0
			for c.flags(pos + spaces).space {
				spaces++
			}
			// '\s+(?!\S)'
			if spaces > 1 && c.cp(pos+spaces) != outOfRange {
				pos += spaces - 1
				c.add(pos)
				continue
			}
			// '\s+'
			if spaces > 0 {
				pos += spaces
				c.add(pos)
				continue
			}
			pos++
			c.add(pos)
		}
		out = c.out
	}
	return out
}

func asciiLower(r rune) rune {
	if r >= 'A' && r <= 'Z' {
		return r + 'a' - 'A'
	}
	return r
}

// splitLlama3 is llama.cpp's unicode_regex_split_custom_llama3, with the
// digit group size as a parameter: 3 gives the Llama 3 regex, 1 the Qwen2
// regex (which llama.cpp runs through std::regex with the same result).
func splitLlama3(cps []rune, chunks []int, out []int, maxDigits int) []int {
	start := 0
	for _, n := range chunks {
		c := wordChunk{cps: cps, ini: start, end: start + n, prev: start, out: out}
		start += n
		for pos := c.ini; pos < c.end; {
			r := c.cp(pos)
			f := c.flags(pos)
			// (?i:'s|'t|'re|'ve|'m|'ll|'d); only ASCII letters lowercase to these
			if r == '\'' && pos+1 < c.end {
				next := asciiLower(c.cp(pos + 1))
				if next == 's' || next == 't' || next == 'm' || next == 'd' {
					pos += c.add(pos + 2)
					continue
				}
				if pos+2 < c.end {
					next2 := asciiLower(c.cp(pos + 2))
					if (next == 'r' && next2 == 'e') || (next == 'v' && next2 == 'e') || (next == 'l' && next2 == 'l') {
						pos += c.add(pos + 3)
						continue
					}
				}
			}
			// [^\r\n\p{L}\p{N}]?\p{L}+
			if !(r == '\r' || r == '\n' || f.number()) {
				if f.letter() || c.flags(pos+1).letter() {
					pos++
					for c.flags(pos).letter() {
						pos++
					}
					c.add(pos)
					continue
				}
			}
			// \p{N}{1,maxDigits}
			if f.number() {
				ini := pos
				for c.flags(pos).number() {
					pos++
					if pos-ini >= maxDigits {
						c.add(pos)
						ini = pos
					}
				}
				c.add(pos)
				continue
			}
			// ' ?[^\s\p{L}\p{N}]+[\r\n]*'; llama.cpp tests the current
			// code point's flags for being in range here, not f2's.
			f2 := f
			if r == ' ' {
				f2 = c.flags(pos + 1)
			}
			if !(f2.space || f2.letter() || f2.number()) && f.inRange {
				if r == ' ' {
					pos++
				}
				for !(f2.space || f2.letter() || f2.number()) && f2.inRange {
					pos++
					f2 = c.flags(pos)
				}
				for r2 := c.cp(pos); r2 == '\r' || r2 == '\n'; r2 = c.cp(pos) {
					pos++
				}
				c.add(pos)
				continue
			}
			spaces, lastNewlineEnd := 0, 0
			for c.flags(pos + spaces).space {
				if r2 := c.cp(pos + spaces); r2 == '\r' || r2 == '\n' {
					lastNewlineEnd = pos + spaces + 1
				}
				spaces++
			}
			// \s*[\r\n]+
			if lastNewlineEnd > 0 {
				pos = lastNewlineEnd
				c.add(pos)
				continue
			}
			// \s+(?!\S)
			if spaces > 1 && c.cp(pos+spaces) != outOfRange {
				pos += spaces - 1
				c.add(pos)
				continue
			}
			// \s+
			if spaces > 0 {
				pos += spaces
				c.add(pos)
				continue
			}
			pos++
			c.add(pos)
		}
		out = c.out
	}
	return out
}

// matcher returns the length of the match of a regex anchored at p (0 for
// none) within a chunk that ends at end.
type matcher func(cps []rune, p, end int) int

// searchStep splits every chunk like std::regex_iterator: the leftmost match
// is found from the current position, the text before it (if any) and the
// match become chunks, and the search resumes after the match. None of the
// matchers here can match the empty string.
func searchStep(m matcher) splitStep {
	return func(cps []rune, chunks []int, out []int) []int {
		start := 0
		for _, n := range chunks {
			end := start + n
			last := start
			for p := start; p < end; {
				k := m(cps, p, end)
				if k == 0 {
					p++
					continue
				}
				if p > last {
					out = append(out, p-last)
				}
				out = append(out, k)
				p += k
				last = p
			}
			if last < end {
				out = append(out, end-last)
			}
			start = end
		}
		return out
	}
}

func matchNewline(cps []rune, p, end int) int {
	if cps[p] == '\r' || cps[p] == '\n' {
		return 1
	}
	return 0
}

func matchOneNumber(cps []rune, p, end int) int {
	if classOf(cps[p]) == classNumber {
		return 1
	}
	return 0
}

func matchThreeASCIIDigits(cps []rune, p, end int) int {
	if p+3 <= end {
		for _, r := range cps[p : p+3] {
			if r < '0' || r > '9' {
				return 0
			}
		}
		return 3
	}
	return 0
}

// runOf matches [class]+.
func runOf(in func(rune) bool) matcher {
	return func(cps []rune, p, end int) int {
		q := p
		for q < end && in(cps[q]) {
			q++
		}
		return q - p
	}
}

// optionalSpaceThen matches \s?[class]+ with ECMAScript backtracking: the
// optional whitespace is taken first and given back if no class character
// follows it.
func optionalSpaceThen(in func(rune) bool) matcher {
	run := runOf(in)
	return func(cps []rune, p, end int) int {
		if isWhitespace(cps[p]) && p+1 < end {
			if k := run(cps, p+1, end); k > 0 {
				return 1 + k
			}
		}
		return run(cps, p, end)
	}
}

// splitTrailingSpace implements \s+$ ($ is the end of the chunk): the
// whitespace that ends a chunk becomes a chunk of its own.
func splitTrailingSpace(cps []rune, chunks []int, out []int) []int {
	start := 0
	for _, n := range chunks {
		end := start + n
		t := end
		for t > start && isWhitespace(cps[t-1]) {
			t--
		}
		if t > start {
			out = append(out, t-start)
		}
		if t < end {
			out = append(out, end-t)
		}
		start = end
	}
	return out
}

// The DeepSeek regexes use literal character classes. llama.cpp matches
// them with std::wregex on code points after replacing non-ASCII whitespace
// by \v, so such whitespace never matches a literal range (e.g. U+3000).

// deepseekLetterRanges is the class of the DeepSeek LLM letter regex
// (A-Za-z and the cased letters Lu/Ll/Lt of an older Unicode version).
var deepseekLetterRanges = [][2]rune{
	{0x41, 0x5A}, {0x61, 0x7A}, {0xB5, 0xB5}, {0xC0, 0xD6}, {0xD8, 0xF6}, {0xF8, 0x1BA}, {0x1BC, 0x1BF},
	{0x1C4, 0x293}, {0x295, 0x2AF}, {0x370, 0x373}, {0x376, 0x377}, {0x37B, 0x37D}, {0x37F, 0x37F},
	{0x386, 0x386}, {0x388, 0x38A}, {0x38C, 0x38C}, {0x38E, 0x3A1}, {0x3A3, 0x3F5}, {0x3F7, 0x481},
	{0x48A, 0x52F}, {0x531, 0x556}, {0x10A0, 0x10C5}, {0x13A0, 0x13F5}, {0x13F8, 0x13FD},
	{0x1C90, 0x1CBA}, {0x1CBD, 0x1CBF}, {0x1D00, 0x1D2B}, {0x1D6B, 0x1D77}, {0x1D79, 0x1D9A},
	{0x1E00, 0x1F15}, {0x1F18, 0x1F1D}, {0x1F20, 0x1F45}, {0x1F48, 0x1F4D}, {0x1F50, 0x1F57},
	{0x1F59, 0x1F59}, {0x1F5B, 0x1F5B}, {0x1F5D, 0x1F5D}, {0x1F5F, 0x1F7D}, {0x1F80, 0x1FB4},
	{0x1FB6, 0x1FBC}, {0x1FBE, 0x1FBE}, {0x1FC2, 0x1FC4}, {0x1FC6, 0x1FCC}, {0x1FD0, 0x1FD3},
	{0x1FD6, 0x1FDB}, {0x1FE0, 0x1FEC}, {0x1FF2, 0x1FF4}, {0x1FF6, 0x1FFC}, {0x2102, 0x2102},
	{0x2107, 0x2107}, {0x210A, 0x2113}, {0x2115, 0x2115}, {0x2119, 0x211D}, {0x2124, 0x2124},
	{0x2126, 0x2126}, {0x2128, 0x2128}, {0x212A, 0x212D}, {0x212F, 0x2134}, {0x2139, 0x2139},
	{0x213C, 0x213F}, {0x2145, 0x2149}, {0x214E, 0x214E}, {0x2183, 0x2184}, {0x2C00, 0x2C7B},
	{0x2C7E, 0x2CE4}, {0x2CEB, 0x2CEE}, {0x2CF2, 0x2CF3}, {0xA640, 0xA66D}, {0xA680, 0xA69B},
	{0xA722, 0xA76F}, {0xA771, 0xA787}, {0xA78B, 0xA78E}, {0xAB70, 0xABBF}, {0xFB00, 0xFB06},
	{0xFB13, 0xFB17}, {0xFF21, 0xFF3A}, {0xFF41, 0xFF5A}, {0x10400, 0x1044F}, {0x104B0, 0x104D3},
	{0x104D8, 0x104FB}, {0x10C80, 0x10CB2}, {0x10CC0, 0x10CF2}, {0x118A0, 0x118DF}, {0x1E900, 0x1E943},
}

// deepseekPunctRanges: [!-/:-~！-／：-～‘-‟　-。]
var deepseekPunctRanges = [][2]rune{
	{0x21, 0x2F}, {0x3A, 0x7E}, {0x2018, 0x201F}, {0x3000, 0x3002}, {0xFF01, 0xFF0F}, {0xFF1A, 0xFF5E},
}

// deepseekCJKRanges: [一-龥ࠀ-一가-퟿]
var deepseekCJKRanges = [][2]rune{{0x800, 0x9FA5}, {0xAC00, 0xD7FF}}

func inRanges(ranges [][2]rune, r rune) bool {
	i := sort.Search(len(ranges), func(i int) bool { return ranges[i][1] >= r })
	return i < len(ranges) && ranges[i][0] <= r
}

func isDeepseekLetter(r rune) bool {
	return !(r > 0x7F && isWhitespace(r)) && inRanges(deepseekLetterRanges, r)
}

func isDeepseekPunct(r rune) bool {
	return !(r > 0x7F && isWhitespace(r)) && inRanges(deepseekPunctRanges, r)
}

func isDeepseekCJK(r rune) bool {
	return !(r > 0x7F && isWhitespace(r)) && inRanges(deepseekCJKRanges, r)
}
