// Package grammar constrains generation to a formal language: JSON, or the
// JSON values a JSON schema accepts (FromJSONSchema), compiled to a
// context-free grammar over bytes in the manner of llama.cpp's GBNF grammars.
//
// A Grammar is immutable and shared. A Matcher follows one sequence's output
// through it: Mask says which vocabulary tokens keep the output a valid
// prefix (and whether an end-of-generation token may end it now), Accept
// advances by the token chosen. The matcher walks a trie of the
// vocabulary's byte strings (built once per vocabulary, NewVocab) instead of
// trying every token, so a step costs the trie nodes that stay valid, and
// it remembers the masks of states it has seen (a JSON string's body is one
// state however long the string grows).
//
// Matching is llama.cpp's: the state is a set of stacks of grammar
// positions (a pushdown automaton with the nondeterminism kept as a set).
// A byte keeps the stacks that can take it, advanced past it; a rule
// reference on top is expanded only into the alternatives whose first
// bytes include it, so a JSON string's body stays one stack. Rules must
// not be left-recursive; the compiler never makes such rules.
package grammar

import (
	"errors"
	"fmt"
	"strings"
	"sync"
)

// Grammar is a compiled context-free grammar over bytes. It is immutable
// and safe for concurrent use by many Matchers.
type Grammar struct {
	// elems holds every rule's alternatives, each a sequence of elements
	// ended by an elemEnd.
	elems []elem
	// alts[r] are the start positions in elems of rule r's alternatives.
	alts [][]int32
	// sets are the byte classes elements refer to.
	sets []byteSet
	// restLen[p] is the fewest bytes that match elems[p:] up to the end of
	// its sequence: how far a stack whose top is p is from popping.
	restLen []int32
	// first[p] holds the bytes that can begin a match of elems[p:] up to
	// the end of its sequence, and nullable[p] whether that can be empty:
	// a byte only enters the alternatives that can start with it.
	first    []byteSet
	nullable []bool
	ruleNull []bool   // rules that can match the empty text
	names    []string // rule names, for String
	root     int32
	caches   sync.Map // *Vocab → *maskCache: masks by state, shared by matchers
}

type elemKind uint8

const (
	elemEnd  elemKind = iota // ends an alternative
	elemSet                  // one byte of a class: arg indexes Grammar.sets
	elemRule                 // a rule reference: arg is the rule
)

type elem struct {
	kind elemKind
	arg  int32
}

// byteSet is a set of bytes.
type byteSet [4]uint64

func (s *byteSet) has(b byte) bool { return s[b>>6]>>(b&63)&1 != 0 }
func (s *byteSet) union(t *byteSet) {
	for i := range s {
		s[i] |= t[i]
	}
}
func (s *byteSet) empty() bool { return s[0]|s[1]|s[2]|s[3] == 0 }
func (s *byteSet) add(b byte)  { s[b>>6] |= 1 << (b & 63) }
func (s *byteSet) addRange(lo, hi byte) {
	for c := int(lo); c <= int(hi); c++ {
		s.add(byte(c))
	}
}

// ErrTooComplex is returned when a grammar or its matching would grow past
// the bounds this package keeps (rules, stacks).
var ErrTooComplex = errors.New("grammar: too complex")

// maxRules bounds a compiled grammar (a schema's repetition counts expand
// into rules).
const maxRules = 1 << 16

// The expression tree the compilers build; lowered into rules by build.
type expr interface{ isExpr() }

type (
	exprSet struct{ set byteSet }
	exprSeq []expr
	exprAlt []expr
	exprRef struct{ rule int32 }
	// exprRep is x repeated between min and max times; max < 0: unbounded.
	exprRep struct {
		x        expr
		min, max int
	}
)

func (exprSet) isExpr() {}
func (exprSeq) isExpr() {}
func (exprAlt) isExpr() {}
func (exprRef) isExpr() {}
func (exprRep) isExpr() {}

// lit matches s byte for byte.
func lit(s string) expr {
	seq := make(exprSeq, len(s))
	for i := 0; i < len(s); i++ {
		var set byteSet
		set.add(s[i])
		seq[i] = exprSet{set}
	}
	return seq
}

// class matches one byte in the ranges, given as pairs lo, hi.
func class(ranges ...byte) expr {
	var set byteSet
	for i := 0; i+1 < len(ranges); i += 2 {
		set.addRange(ranges[i], ranges[i+1])
	}
	return exprSet{set}
}

func seq(xs ...expr) expr { return exprSeq(xs) }
func alt(xs ...expr) expr { return exprAlt(xs) }
func opt(x expr) expr     { return exprRep{x, 0, 1} }
func star(x expr) expr    { return exprRep{x, 0, -1} }
func rep(x expr, min, max int) expr {
	return exprRep{x, min, max}
}

// builder lowers expressions into rules.
type builder struct {
	g      Grammar
	bodies [][][]elem // per rule, per alternative: its elements (before layout)
	setIDs map[byteSet]int32
	err    error
}

func newBuilder() *builder { return &builder{setIDs: map[byteSet]int32{}} }

// declare makes an empty rule to be defined later (for references that
// come before their definition, such as recursive $refs).
func (b *builder) declare(name string) int32 {
	if len(b.bodies) >= maxRules {
		b.err = fmt.Errorf("%w: more than %d rules", ErrTooComplex, maxRules)
		return 0
	}
	b.bodies = append(b.bodies, nil)
	b.g.names = append(b.g.names, name)
	return int32(len(b.bodies) - 1)
}

// define sets a declared rule's body.
func (b *builder) define(r int32, x expr) {
	if b.err != nil {
		return
	}
	if a, ok := x.(exprAlt); ok {
		alts := make([][]elem, 0, len(a))
		for _, y := range a {
			alts = append(alts, b.sequence(y, b.g.names[r]))
		}
		b.bodies[r] = alts
		return
	}
	b.bodies[r] = [][]elem{b.sequence(x, b.g.names[r])}
}

// rule declares and defines a rule, returning its reference.
func (b *builder) rule(name string, x expr) expr {
	r := b.declare(name)
	b.define(r, x)
	return exprRef{r}
}

// sequence lowers x into a sequence of elements, making helper rules for
// nested alternatives and repetitions.
func (b *builder) sequence(x expr, name string) []elem {
	var out []elem
	var walk func(x expr)
	walk = func(x expr) {
		switch x := x.(type) {
		case exprSet:
			id, ok := b.setIDs[x.set]
			if !ok {
				id = int32(len(b.g.sets))
				b.g.sets = append(b.g.sets, x.set)
				b.setIDs[x.set] = id
			}
			out = append(out, elem{elemSet, id})
		case exprSeq:
			for _, y := range x {
				walk(y)
			}
		case exprRef:
			out = append(out, elem{elemRule, x.rule})
		case exprAlt:
			if len(x) == 1 {
				walk(x[0])
				return
			}
			r := b.declare(name + "-alt")
			b.define(r, x)
			out = append(out, elem{elemRule, r})
		case exprRep:
			for i := 0; i < x.min; i++ {
				walk(x.x)
			}
			walk(b.repeatTail(x.x, x.max-x.min, x.max < 0, name))
		}
	}
	walk(x)
	return out
}

// repeatTail matches x up to n more times (unbounded: any number).
func (b *builder) repeatTail(x expr, n int, unbounded bool, name string) expr {
	if unbounded {
		// star ::= x star | ""  (right recursion: the stack does not grow)
		r := b.declare(name + "-star")
		b.define(r, alt(seq(x, exprRef{r}), exprSeq{}))
		return exprRef{r}
	}
	if n <= 0 {
		return exprSeq{}
	}
	// up to n ::= "" | x (up to n-1), built from the inside out. x is made a
	// rule once so its copies share it.
	item := x
	if _, single := x.(exprSet); !single {
		if _, ref := x.(exprRef); !ref {
			item = b.rule(name+"-item", x)
		}
	}
	tail := expr(exprSeq{})
	for i := 1; i <= n && b.err == nil; i++ {
		tail = b.rule(fmt.Sprintf("%s-upto%d", name, i), alt(exprSeq{}, seq(item, tail)))
	}
	return tail
}

// finish lays the rules out and computes the shortest completions.
func (b *builder) finish(root expr) (*Grammar, error) {
	r := b.declare("root")
	b.define(r, root)
	if b.err != nil {
		return nil, b.err
	}
	g := &b.g
	g.root = r
	g.alts = make([][]int32, len(b.bodies))
	for rule, alts := range b.bodies {
		for _, a := range alts {
			g.alts[rule] = append(g.alts[rule], int32(len(g.elems)))
			g.elems = append(g.elems, a...)
			g.elems = append(g.elems, elem{kind: elemEnd})
		}
	}
	if err := g.computeLengths(); err != nil {
		return nil, err
	}
	if err := g.checkLeftRecursion(); err != nil {
		return nil, err
	}
	g.computeFirst()
	return g, nil
}

const infinite = int32(1 << 30)

// computeLengths finds each rule's shortest match (a fixpoint: recursive
// rules start infinite) and then each position's shortest rest.
func (g *Grammar) computeLengths() error {
	ruleLen := make([]int32, len(g.alts))
	for i := range ruleLen {
		ruleLen[i] = infinite
	}
	seqLen := func(p int32) int32 {
		n := int32(0)
		for ; g.elems[p].kind != elemEnd; p++ {
			e := g.elems[p]
			if e.kind == elemSet {
				n++
			} else {
				n += ruleLen[e.arg]
			}
			if n >= infinite {
				return infinite
			}
		}
		return n
	}
	for changed := true; changed; {
		changed = false
		for r, alts := range g.alts {
			for _, a := range alts {
				if n := seqLen(a); n < ruleLen[r] {
					ruleLen[r] = n
					changed = true
				}
			}
		}
	}
	for r, n := range ruleLen {
		if n >= infinite {
			return fmt.Errorf("grammar: rule %s matches no finite text", g.names[r])
		}
	}
	g.restLen = make([]int32, len(g.elems))
	for i := len(g.elems) - 1; i >= 0; i-- {
		switch e := g.elems[i]; e.kind {
		case elemEnd:
			g.restLen[i] = 0
		case elemSet:
			g.restLen[i] = 1 + g.restLen[i+1]
		case elemRule:
			g.restLen[i] = ruleLen[e.arg] + g.restLen[i+1]
		}
	}
	return nil
}

// ruleNullable reports which rules can match the empty text.
func (g *Grammar) ruleNullable() []bool {
	nullable := make([]bool, len(g.alts))
	for changed := true; changed; {
		changed = false
		for r, alts := range g.alts {
			if nullable[r] {
				continue
			}
			for _, a := range alts {
				p := a
				for g.elems[p].kind == elemRule && nullable[g.elems[p].arg] {
					p++
				}
				if g.elems[p].kind == elemEnd {
					nullable[r] = true
					changed = true
					break
				}
			}
		}
	}
	return nullable
}

// computeFirst fills first and nullable: the rules' first bytes by a
// fixpoint, then each position's from the end of its sequence back.
func (g *Grammar) computeFirst() {
	ruleNull := g.ruleNullable()
	g.ruleNull = ruleNull
	ruleFirst := make([]byteSet, len(g.alts))
	seqFirst := func(p int32) byteSet {
		var set byteSet
		for ; g.elems[p].kind != elemEnd; p++ {
			e := g.elems[p]
			if e.kind == elemSet {
				set.union(&g.sets[e.arg])
				return set
			}
			set.union(&ruleFirst[e.arg])
			if !ruleNull[e.arg] {
				return set
			}
		}
		return set
	}
	for changed := true; changed; {
		changed = false
		for r, alts := range g.alts {
			for _, a := range alts {
				f := seqFirst(a)
				before := ruleFirst[r]
				ruleFirst[r].union(&f)
				changed = changed || ruleFirst[r] != before
			}
		}
	}
	g.first = make([]byteSet, len(g.elems))
	g.nullable = make([]bool, len(g.elems))
	for i := len(g.elems) - 1; i >= 0; i-- {
		switch e := g.elems[i]; e.kind {
		case elemEnd:
			g.nullable[i] = true
		case elemSet:
			g.first[i] = g.sets[e.arg]
		case elemRule:
			g.first[i] = ruleFirst[e.arg]
			if ruleNull[e.arg] {
				g.first[i].union(&g.first[i+1])
				g.nullable[i] = g.nullable[i+1]
			}
		}
	}
}

// checkLeftRecursion refuses a rule that can reach itself without
// consuming a byte, which would make matching loop.
func (g *Grammar) checkLeftRecursion() error {
	nullable := g.ruleNullable()
	// state: 0 unvisited, 1 on the path, 2 done.
	state := make([]uint8, len(g.alts))
	var visit func(r int32) error
	visit = func(r int32) error {
		switch state[r] {
		case 1:
			return fmt.Errorf("grammar: rule %s is left-recursive", g.names[r])
		case 2:
			return nil
		}
		state[r] = 1
		for _, a := range g.alts[r] {
			for p := a; g.elems[p].kind == elemRule; p++ {
				if err := visit(g.elems[p].arg); err != nil {
					return err
				}
				if !nullable[g.elems[p].arg] {
					break
				}
			}
		}
		state[r] = 2
		return nil
	}
	for r := range g.alts {
		if err := visit(int32(r)); err != nil {
			return err
		}
	}
	return nil
}

// MinLength is the fewest bytes of any text the grammar accepts.
func (g *Grammar) MinLength() int {
	n := infinite
	for _, a := range g.alts[g.root] {
		n = min(n, g.restLen[a])
	}
	return int(n)
}

// String writes the grammar in GBNF-like notation, one rule per line.
func (g *Grammar) String() string {
	var sb strings.Builder
	for r, alts := range g.alts {
		fmt.Fprintf(&sb, "%s-%d ::=", g.names[r], r)
		for i, a := range alts {
			if i > 0 {
				sb.WriteString(" |")
			}
			if g.elems[a].kind == elemEnd {
				sb.WriteString(` ""`)
			}
			for p := a; g.elems[p].kind != elemEnd; p++ {
				sb.WriteByte(' ')
				switch e := g.elems[p]; e.kind {
				case elemSet:
					sb.WriteString(g.sets[e.arg].String())
				case elemRule:
					fmt.Fprintf(&sb, "%s-%d", g.names[e.arg], e.arg)
				}
			}
		}
		sb.WriteByte('\n')
	}
	return sb.String()
}

func (s *byteSet) String() string {
	var sb strings.Builder
	n := 0
	for c := 0; c < 256; c++ {
		if s.has(byte(c)) {
			n++
		}
	}
	if n == 1 {
		for c := 0; c < 256; c++ {
			if s.has(byte(c)) {
				return fmt.Sprintf("%q", string(rune(c)))
			}
		}
	}
	sb.WriteByte('[')
	for c := 0; c < 256; {
		if !s.has(byte(c)) {
			c++
			continue
		}
		lo := c
		for c < 256 && s.has(byte(c)) {
			c++
		}
		fmt.Fprintf(&sb, "\\x%02X", lo)
		if c-1 > lo {
			fmt.Fprintf(&sb, "-\\x%02X", c-1)
		}
	}
	sb.WriteByte(']')
	return sb.String()
}
