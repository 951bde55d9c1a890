package grammar

import (
	"bytes"
	"fmt"
	"slices"
)

// Vocab is a tokenizer's vocabulary as byte strings, in a trie, built once
// and shared by every Matcher on that tokenizer.
type Vocab struct {
	pieces [][]byte
	eog    []bool
	// nodes is the trie in preorder; nodes[0] is the root (the empty
	// string). A node's subtree is nodes[i:nodes[i].end].
	nodes []trieNode
	// tokens holds the ids of each node's tokens, node by node.
	tokens   []int32
	maxDepth int
}

type trieNode struct {
	b                byte
	depth            int32
	end              int32 // one past the last node of the subtree
	tokStart, tokEnd int32 // the node's tokens: tokens[tokStart:tokEnd]
}

// NewVocab builds the trie of a vocabulary. pieces[id] is the bytes token
// id produces in the output (the tokenizer's Piece); tokens with an empty
// piece (control tokens) are never allowed, except the end-of-generation
// tokens eog, which are allowed exactly when the output is complete.
func NewVocab(pieces []string, eog []int32) (*Vocab, error) {
	v := &Vocab{pieces: make([][]byte, len(pieces)), eog: make([]bool, len(pieces))}
	for id, p := range pieces {
		v.pieces[id] = []byte(p)
	}
	for _, id := range eog {
		if id < 0 || int(id) >= len(pieces) {
			return nil, fmt.Errorf("grammar: end-of-generation token %d is outside the vocabulary [0, %d)", id, len(pieces))
		}
		v.eog[id] = true
	}
	var ids []int32
	for id, p := range v.pieces {
		if len(p) > 0 && !v.eog[id] {
			ids = append(ids, int32(id))
		}
	}
	slices.SortStableFunc(ids, func(a, b int32) int { return bytes.Compare(v.pieces[a], v.pieces[b]) })
	v.tokens = ids
	// Sorted pieces give the preorder: walk them keeping the current path.
	v.nodes = []trieNode{{}}
	path := []int32{0} // node indices; path[d] is at depth d
	closeTo := func(depth int) {
		for len(path) > depth+1 {
			last := path[len(path)-1]
			v.nodes[last].end = int32(len(v.nodes))
			path = path[:len(path)-1]
		}
	}
	var prev []byte
	for i, id := range ids {
		p := v.pieces[id]
		common := 0
		for common < len(prev) && common < len(p) && prev[common] == p[common] {
			common++
		}
		closeTo(common)
		for d := common; d < len(p); d++ {
			v.nodes = append(v.nodes, trieNode{b: p[d], depth: int32(d + 1)})
			path = append(path, int32(len(v.nodes)-1))
		}
		n := &v.nodes[path[len(path)-1]]
		if n.tokEnd == 0 {
			n.tokStart = int32(i)
		}
		n.tokEnd = int32(i + 1)
		v.maxDepth = max(v.maxDepth, len(p))
		prev = p
	}
	closeTo(0)
	v.nodes[0].end = int32(len(v.nodes))
	return v, nil
}

// Size is the number of tokens.
func (v *Vocab) Size() int { return len(v.pieces) }
