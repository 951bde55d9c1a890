package grammar

import (
	"encoding/binary"
	"fmt"
	"math/bits"
	"sync"
)

// maxStacks bounds a matcher's state: an ambiguous grammar (overlapping
// anyOf branches) keeps one stack per live reading.
const maxStacks = 1024

// maxCachedMaskBytes bounds the masks remembered for one grammar and
// vocabulary.
const maxCachedMaskBytes = 8 << 20

// Matcher follows one sequence through a grammar. It is not safe for
// concurrent use; Clone gives an independent copy (for forked sequences).
// Matchers of one grammar and vocabulary share its cache of masks, so a
// schema used again starts warm.
type Matcher struct {
	g *Grammar
	v *Vocab

	// frames is an arena of stack frames: the live state's frames first
	// (committed), scratch beyond them during Mask and Accept.
	frames []frame
	stacks []int32 // the state: one frame index per stack; -1 is the empty stack
	ended  bool    // an end-of-generation token was accepted

	remaining int // tokens the sequence may still produce; ≤ 0: unbounded

	cache *maskCache
	key   []byte // scratch: the state's cache key

	// Scratch for the trie walk.
	sets  [][]int32
	marks []int
	bufA  []int32
	bufB  []int32
}

// frame is one entry of a stack: a grammar position and the frame below.
type frame struct {
	pos    int32
	parent int32 // -1: bottom
	// minRem is the fewest bytes that empty the stack from this frame down.
	minRem int32
}

type maskCache struct {
	mu      sync.Mutex
	entries map[string]*maskEntry
	bytes   int
}

type maskEntry struct {
	bits     []uint64 // allowed non-end tokens
	complete bool     // end-of-generation tokens allowed
	// maxRem is the largest shortest-completion (bytes) left by an allowed
	// token: the entry holds for any budget that leaves room for it.
	maxRem int32
}

// NewMatcher starts matching g from its start, over vocabulary v.
func NewMatcher(g *Grammar, v *Vocab) *Matcher {
	c, _ := g.caches.LoadOrStore(v, &maskCache{entries: map[string]*maskEntry{}})
	m := &Matcher{g: g, v: v, cache: c.(*maskCache)}
	m.sets = make([][]int32, v.maxDepth+1)
	m.marks = make([]int, v.maxDepth+1)
	var out []int32
	for _, a := range g.alts[g.root] {
		if g.elems[a].kind == elemEnd {
			out = m.addStack(out, -1)
		} else {
			out = m.addStack(out, m.push(a, -1))
		}
	}
	m.commit(out)
	return m
}

// Clone returns an independent matcher in the same state.
func (m *Matcher) Clone() *Matcher {
	c := *m
	c.frames = append([]frame(nil), m.frames...)
	c.stacks = append([]int32(nil), m.stacks...)
	c.key = nil
	c.sets = make([][]int32, len(m.sets))
	c.marks = make([]int, len(m.marks))
	c.bufA, c.bufB = nil, nil
	return &c
}

// SetRemaining tells the matcher how many tokens the sequence may still
// produce, counting the next; ≤ 0 means no limit. Mask then allows only
// tokens after which the grammar can still be completed in time (each later
// token adding at least one byte of the shortest completion; vocabularies
// have single-byte tokens), so output cut by a token limit still parses.
func (m *Matcher) SetRemaining(tokens int) { m.remaining = tokens }

// Complete reports whether the output so far is a whole sentence of the
// grammar (an end-of-generation token may end it).
func (m *Matcher) Complete() bool {
	return m.ended || m.minRem(m.stacks) == 0
}

// Done reports whether the output is complete and nothing can follow.
func (m *Matcher) Done() bool {
	if m.ended {
		return true
	}
	if !m.Complete() {
		return false
	}
	for _, s := range m.stacks {
		for ; s >= 0; s = m.frames[s].parent {
			p := m.frames[s].pos
			if !m.g.first[p].empty() {
				return false
			}
			if !m.g.nullable[p] {
				break
			}
		}
	}
	return true
}

// MinRemaining is the fewest bytes that complete the output.
func (m *Matcher) MinRemaining() int {
	return int(m.minRem(m.stacks))
}

func (m *Matcher) minRem(stacks []int32) int32 {
	r := infinite
	for _, s := range stacks {
		if s < 0 {
			return 0
		}
		r = min(r, m.frames[s].minRem)
	}
	return r
}

// Mask sets allowed[id] for every token that may come next: tokens whose
// bytes keep the output a valid prefix, and the end-of-generation tokens
// when it is complete. allowed must hold at least the vocabulary; entries
// past it are set false.
func (m *Matcher) Mask(allowed []bool) {
	clear(allowed)
	if m.ended {
		return
	}
	e := m.entry()
	for w, word := range e.bits {
		for word != 0 {
			b := bits.TrailingZeros64(word)
			allowed[w*64+b] = true
			word &= word - 1
		}
	}
	if e.complete {
		for id, isEnd := range m.v.eog {
			allowed[id] = isEnd || allowed[id]
		}
	}
}

// Allows reports whether token id may come next (as Mask would say).
func (m *Matcher) Allows(id int32) bool {
	if m.ended || id < 0 || int(id) >= len(m.v.pieces) {
		return false
	}
	e := m.entry()
	if m.v.eog[id] {
		return e.complete
	}
	return e.bits[id/64]>>(id%64)&1 != 0
}

// entry returns the mask of the current state under the current budget,
// from the cache when it holds one that fits.
func (m *Matcher) entry() *maskEntry {
	m.key = m.stateKey(m.key[:0])
	m.cache.mu.Lock()
	e := m.cache.entries[string(m.key)]
	m.cache.mu.Unlock()
	if e == nil {
		e = m.compute(0)
		m.cache.put(string(m.key), e)
	}
	if m.remaining > 0 && e.maxRem > int32(m.remaining-1) {
		// Some allowed tokens leave too much to finish within the budget:
		// walk again under it (only near the end of a budget).
		return m.compute(m.remaining)
	}
	return e
}

func (c *maskCache) put(key string, e *maskEntry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	size := len(e.bits)*8 + len(key) + 64
	if c.bytes+size > maxCachedMaskBytes {
		clear(c.entries)
		c.bytes = 0
	}
	c.entries[key] = e
	c.bytes += size
}

// stateKey serialises the stacks (positions from top to bottom).
func (m *Matcher) stateKey(dst []byte) []byte {
	for _, s := range m.stacks {
		for ; s >= 0; s = m.frames[s].parent {
			dst = binary.LittleEndian.AppendUint32(dst, uint32(m.frames[s].pos))
		}
		dst = binary.LittleEndian.AppendUint32(dst, ^uint32(0))
	}
	return dst
}

// compute walks the vocabulary trie from the current state. remaining > 0
// allows only tokens that leave a completion of at most remaining-1 bytes;
// when no token can (the budget was too small from the start), those that
// leave the shortest completion, so the output ends as soon as it can.
func (m *Matcher) compute(remaining int) *maskEntry {
	v := m.v
	words := (len(v.pieces) + 63) / 64
	e := &maskEntry{bits: make([]uint64, words)}
	var closest []uint64 // with a budget: the tokens leaving the least
	closestRem := infinite
	if remaining > 0 {
		closest = make([]uint64, words)
	}
	e.complete = m.minRem(m.stacks) == 0
	base := len(m.frames)
	m.sets[0] = m.stacks
	m.marks[0] = base
	nodes := v.nodes
	for i := int32(1); i < int32(len(nodes)); {
		nd := &nodes[i]
		d := nd.depth
		m.frames = m.frames[:m.marks[d-1]]
		m.sets[d] = m.advance(m.sets[d-1], nd.b, m.sets[d][:0])
		if len(m.sets[d]) == 0 {
			i = nd.end
			continue
		}
		m.marks[d] = len(m.frames)
		if nd.tokStart < nd.tokEnd {
			r := m.minRem(m.sets[d])
			toks := v.tokens[nd.tokStart:nd.tokEnd]
			if remaining <= 0 || r <= int32(remaining-1) {
				setBits(e.bits, toks)
				e.maxRem = max(e.maxRem, r)
			}
			if closest != nil && r <= closestRem {
				if r < closestRem {
					clear(closest)
					closestRem = r
				}
				setBits(closest, toks)
			}
		}
		i++
	}
	m.frames = m.frames[:base]
	if closest != nil && !e.complete && isZero(e.bits) {
		e.bits, e.maxRem = closest, closestRem
	}
	return e
}

func setBits(bits []uint64, ids []int32) {
	for _, id := range ids {
		bits[id/64] |= 1 << (id % 64)
	}
}

func isZero(bits []uint64) bool {
	for _, w := range bits {
		if w != 0 {
			return false
		}
	}
	return true
}

// Accept advances the state by token id. A token the grammar does not
// allow here is an error, and the state is left as it was.
func (m *Matcher) Accept(id int32) error {
	if id < 0 || int(id) >= len(m.v.pieces) {
		return fmt.Errorf("grammar: token %d is outside the vocabulary", id)
	}
	if m.ended {
		return fmt.Errorf("grammar: token %d after the end", id)
	}
	if m.v.eog[id] {
		if !m.Complete() {
			return fmt.Errorf("grammar: end-of-generation token %d before the output is complete", id)
		}
		m.ended = true
		return nil
	}
	p := m.v.pieces[id]
	if len(p) == 0 {
		return fmt.Errorf("grammar: token %d produces no text", id)
	}
	base := len(m.frames)
	cur := append(m.bufA[:0], m.stacks...)
	next := m.bufB[:0]
	for _, b := range p {
		next = m.advance(cur, b, next[:0])
		if len(next) == 0 {
			m.frames = m.frames[:base]
			m.bufA, m.bufB = cur, next
			return fmt.Errorf("grammar: token %d (%q) does not continue the output", id, p)
		}
		if len(next) > maxStacks {
			m.frames = m.frames[:base]
			m.bufA, m.bufB = cur, next
			return fmt.Errorf("%w: more than %d parses of the output at once", ErrTooComplex, maxStacks)
		}
		cur, next = next, cur
	}
	m.bufA, m.bufB = next, cur
	m.commit(cur)
	return nil
}

// commit makes stacks the state, copying their frames into a fresh arena
// so dead frames do not pile up.
func (m *Matcher) commit(stacks []int32) {
	old := m.frames
	frames := make([]frame, 0, len(stacks)*4)
	moved := map[int32]int32{}
	var move func(s int32) int32
	move = func(s int32) int32 {
		if s < 0 {
			return -1
		}
		if n, ok := moved[s]; ok {
			return n
		}
		f := old[s]
		f.parent = move(f.parent)
		frames = append(frames, f)
		n := int32(len(frames) - 1)
		moved[s] = n
		return n
	}
	m.stacks = m.stacks[:0]
	for _, s := range stacks {
		m.stacks = append(m.stacks, move(s))
	}
	m.frames = frames
}

// push adds a frame at grammar position pos on top of parent.
func (m *Matcher) push(pos, parent int32) int32 {
	rem := int32(0)
	if pos >= 0 {
		rem = m.g.restLen[pos]
	}
	if parent >= 0 {
		rem += m.frames[parent].minRem
	}
	m.frames = append(m.frames, frame{pos: pos, parent: parent, minRem: rem})
	return int32(len(m.frames) - 1)
}

// pop is the stack s after its top element matched: the next element of
// the same sequence, or the frame below when the sequence is finished.
func (m *Matcher) pop(s int32) int32 {
	f := m.frames[s]
	if m.g.elems[f.pos+1].kind == elemEnd {
		return f.parent
	}
	return m.push(f.pos+1, f.parent)
}

// advance appends to out the stacks of in that accept byte b, advanced
// past it. A stack's top may be a rule reference: it is expanded only
// into the alternatives that can begin with b.
func (m *Matcher) advance(in []int32, b byte, out []int32) []int32 {
	for _, s := range in {
		out = m.consume(s, b, out)
	}
	return out
}

// consume appends the stacks that stack s becomes by matching byte b.
func (m *Matcher) consume(s int32, b byte, out []int32) []int32 {
	if s < 0 {
		return out
	}
	g := m.g
	p := m.frames[s].pos
	if !g.first[p].has(b) {
		if g.nullable[p] { // the rest of this sequence matches nothing: b is the parent's
			return m.consume(m.frames[s].parent, b, out)
		}
		return out
	}
	e := g.elems[p]
	if e.kind == elemSet {
		return m.addStack(out, m.pop(s))
	}
	rest := m.pop(s)
	for _, a := range g.alts[e.arg] {
		if g.elems[a].kind != elemEnd && g.first[a].has(b) {
			out = m.consume(m.push(a, rest), b, out)
		}
	}
	if g.ruleNull[e.arg] { // the rule matches nothing: b is what follows it
		out = m.consume(rest, b, out)
	}
	return out
}

// addStack appends s unless an equal stack is already there.
func (m *Matcher) addStack(out []int32, s int32) []int32 {
	for _, t := range out {
		if m.sameStack(s, t) {
			return out
		}
	}
	return append(out, s)
}

func (m *Matcher) sameStack(a, b int32) bool {
	for a != b {
		if a < 0 || b < 0 || m.frames[a].pos != m.frames[b].pos {
			return false
		}
		a, b = m.frames[a].parent, m.frames[b].parent
	}
	return true
}
