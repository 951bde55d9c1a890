package chat

import (
	"errors"
	"fmt"
	"math"
	"reflect"
	"strings"
	"time"
	"unsafe"

	controlStructures "github.com/nikolalohinski/gonja/v2/builtins/control_structures"
	"github.com/nikolalohinski/gonja/v2/exec"
	"github.com/nikolalohinski/gonja/v2/nodes"
	"github.com/nikolalohinski/gonja/v2/parser"
	"github.com/nikolalohinski/gonja/v2/tokens"
)

// Bounding hostile templates. A template comes from a model file, so it is
// data, and gonja has no execution limits of its own. Jinja has no while
// loop: running time can only grow through for loops (over values, whose
// size is bounded below) and macro or loop recursion. So every loop body and
// macro body is wrapped, at parse time, in a guard that counts steps and
// nesting depth and checks the deadline; Go stack overflow (fatal, not a
// panic) is ruled out by the depth bound. Memory is bounded where values
// grow: the output writer, every {% set %}, every macro argument, and the
// operations that multiply a size (repetition, padding, join, replace,
// range).

// stateKey names the per-render state in the template context. It is not a
// valid Jinja identifier, so a template can neither read nor overwrite it.
const stateKey = "wgllm.state"

// renderState is one Render call's budget.
type renderState struct {
	limits   Limits
	steps    int
	depth    int
	deadline time.Time
	// failure is the first limit or raise_exception error. gonja flattens
	// errors from functions into strings, so Render reports this one
	// instead of gonja's wrapped chain.
	failure error
}

func (s *renderState) fail(err error) error {
	if s.failure == nil {
		s.failure = err
	}
	return err
}

func (s *renderState) enter() error {
	s.steps++
	s.depth++
	switch {
	case s.steps > s.limits.MaxSteps:
		return s.fail(limitError("loop iterations and macro calls", s.limits.MaxSteps))
	case s.depth > s.limits.MaxDepth:
		return s.fail(limitError("loop and macro nesting depth", s.limits.MaxDepth))
	case time.Now().After(s.deadline):
		return s.fail(&LimitError{What: "render time", Limit: s.limits.Timeout.String()})
	}
	return nil
}

func (s *renderState) checkValue(what string, v any) error {
	if n := valueSize(reflect.ValueOf(v), s.limits.MaxValueBytes, 0); n > s.limits.MaxValueBytes {
		return s.fail(limitError(what, s.limits.MaxValueBytes))
	}
	return nil
}

// recordLimit records a limit error carried by v as the render's failure,
// so Render reports it as a *LimitError.
func recordLimit(e *exec.Evaluator, v *exec.Value) *exec.Value {
	if !v.IsError() {
		return v
	}
	var le *LimitError
	if err, ok := v.Interface().(error); ok && errors.As(err, &le) {
		if st, ok := evalState(e); ok {
			st.fail(le)
		}
	}
	return v
}

func evalState(e *exec.Evaluator) (*renderState, bool) {
	if e == nil || e.Environment == nil || e.Environment.Context == nil {
		return nil, false
	}
	v, _ := e.Environment.Context.Get(stateKey)
	st, ok := v.(*renderState)
	return st, ok
}

func stateOf(r *exec.Renderer) (*renderState, error) {
	v, _ := r.Environment.Context.Get(stateKey)
	st, ok := v.(*renderState)
	if !ok {
		return nil, errors.New("chat: internal render state missing")
	}
	return st, nil
}

// maxValueDepth bounds nesting in values; deeper means a cycle (a namespace
// stored in itself) or a hostile structure.
const maxValueDepth = 64

// valueSize is the size in bytes of a template value: string bytes, and one
// per element or key so long lists of empty strings count. It stops early
// once past limit and returns more than limit for values nested deeper than
// maxValueDepth.
func valueSize(v reflect.Value, limit, depth int) int {
	if depth > maxValueDepth {
		return limit + 1
	}
	for v.IsValid() && (v.Kind() == reflect.Interface || v.Kind() == reflect.Pointer) {
		if v.IsNil() {
			return 1
		}
		if !v.CanInterface() {
			return 1
		}
		switch x := v.Interface().(type) {
		case *exec.Value:
			v = x.Val
			continue
		case *exec.Dict:
			return dictSize(x, limit, depth)
		}
		v = v.Elem()
	}
	if !v.IsValid() {
		return 1
	}
	switch v.Kind() {
	case reflect.String:
		return v.Len() + 1
	case reflect.Slice, reflect.Array:
		n := 1
		for i := 0; i < v.Len() && n <= limit; i++ {
			n += valueSize(v.Index(i), limit-n, depth+1)
		}
		return n
	case reflect.Map:
		n := 1
		it := v.MapRange()
		for it.Next() && n <= limit {
			n += valueSize(it.Key(), limit-n, depth+1) + valueSize(it.Value(), limit-n, depth+1)
		}
		return n
	case reflect.Struct:
		if v.CanInterface() {
			if d, ok := v.Interface().(exec.Dict); ok {
				return dictSize(&d, limit, depth)
			}
		}
	}
	return 8
}

func dictSize(d *exec.Dict, limit, depth int) int {
	n := 1
	for _, p := range d.Pairs {
		if n > limit {
			break
		}
		n += valueSize(reflect.ValueOf(p.Key), limit-n, depth+1) + valueSize(reflect.ValueOf(p.Value), limit-n, depth+1)
	}
	return n
}

// guard wraps a loop or macro body: one step per iteration or call.
type guard struct {
	body   *nodes.Wrapper
	params []string // macro parameters, size-checked on each call
}

func (g *guard) Position() *tokens.Token {
	if g.body.Location != nil {
		return g.body.Location
	}
	return &tokens.Token{}
}

func (g *guard) String() string { return "guard" }

func (g *guard) Execute(r *exec.Renderer, _ *nodes.ControlStructureBlock) error {
	st, err := stateOf(r)
	if err != nil {
		return err
	}
	if err := st.enter(); err != nil {
		return err
	}
	defer func() { st.depth-- }()
	for _, p := range g.params {
		v, _ := r.Environment.Context.Get(p)
		if err := st.checkValue("macro argument size", v); err != nil {
			return err
		}
	}
	return nodes.Walk(r, g.body)
}

// guardBody moves w's nodes under a guard, in place.
func guardBody(w *nodes.Wrapper, params []string) {
	if w == nil {
		return
	}
	inner := *w
	g := &guard{body: &inner, params: params}
	w.Nodes = []nodes.Node{&nodes.ControlStructureBlock{Location: g.Position(), Name: "guard", ControlStructure: g}}
}

func guardedFor(orig parser.ControlStructureParser) parser.ControlStructureParser {
	return func(p *parser.Parser, args *parser.Parser) (nodes.ControlStructure, error) {
		cs, err := orig(p, args)
		if err != nil {
			return nil, err
		}
		f, ok := cs.(*controlStructures.ForControlStructure)
		if !ok {
			return nil, fmt.Errorf("chat: unexpected for-loop node %T", cs)
		}
		guardBody(f.BodyWrapper, nil)
		return f, nil
	}
}

func guardedMacro(orig parser.ControlStructureParser) parser.ControlStructureParser {
	return func(p *parser.Parser, args *parser.Parser) (nodes.ControlStructure, error) {
		cs, err := orig(p, args)
		if err != nil {
			return nil, err
		}
		m, ok := cs.(*controlStructures.MacroControlStructure)
		if !ok || m.Macro == nil {
			return nil, fmt.Errorf("chat: unexpected macro node %T", cs)
		}
		var params []string
		for _, kw := range m.Kwargs {
			if s, ok := kw.Key.(*nodes.String); ok {
				params = append(params, s.Val)
			}
		}
		for _, name := range []string{m.VarArgsName, m.KwArgsName} {
			if name != "" {
				params = append(params, name)
			}
		}
		guardBody(m.Wrapper, params)
		return m, nil
	}
}

// checkedSet checks the size of the variable a {% set %} assigned (for
// "set ns.attr = ..." the whole namespace).
type checkedSet struct {
	inner exec.ControlStructure
	name  string
}

func (s *checkedSet) Position() *tokens.Token { return s.inner.Position() }
func (s *checkedSet) String() string          { return s.inner.String() }

func (s *checkedSet) Execute(r *exec.Renderer, tag *nodes.ControlStructureBlock) error {
	if err := s.inner.Execute(r, tag); err != nil {
		return err
	}
	st, err := stateOf(r)
	if err != nil {
		return err
	}
	v, _ := r.Environment.Context.Get(s.name)
	return st.checkValue("value size", v)
}

func checkedSetParser(orig parser.ControlStructureParser) parser.ControlStructureParser {
	return func(p *parser.Parser, args *parser.Parser) (nodes.ControlStructure, error) {
		target := args.Current(tokens.Name)
		cs, err := orig(p, args)
		if err != nil {
			return nil, err
		}
		inner, ok := cs.(exec.ControlStructure)
		if !ok || target == nil {
			return nil, fmt.Errorf("chat: unexpected set node %T", cs)
		}
		return &checkedSet{inner: inner, name: target.Val}, nil
	}
}

// cappedWriter is the render output; it fails past limit bytes.
type cappedWriter struct {
	b     strings.Builder
	limit int
	st    *renderState
}

func (w *cappedWriter) Write(p []byte) (int, error) {
	if w.b.Len()+len(p) > w.limit {
		return 0, w.st.fail(limitError("output size", w.limit))
	}
	return w.b.Write(p)
}

// Arithmetic. gonja's *, //, % and ** differ from Python (int ** int gives
// a float, // truncates toward zero, % by zero and str * negative panic) and
// str * n allocates without bound. gonja has no operator hook, so after
// parsing, each such node "a OP b" is rewritten in place to
// "arith_OP(a, b) * 1": the call evaluates a and b once with Python's
// semantics and the size limits, and "* 1" is the identity on the int,
// float and str results.

var arithOps = map[tokens.Type]string{
	tokens.Multiply:      "wgllm.mul",
	tokens.FloorDivision: "wgllm.floordiv",
	tokens.Modulo:        "wgllm.mod",
	tokens.Power:         "wgllm.pow",
}

var binaryExpressionType = reflect.TypeFor[*nodes.BinaryExpression]()

// rewriteArithmetic walks every node reachable from root, including through
// the unexported fields of gonja's control structures (read-only for
// reflect, hence the pointer conversion to modify a node in place).
func rewriteArithmetic(root *nodes.Template) {
	seen := map[uintptr]bool{}
	var walk func(v reflect.Value)
	walk = func(v reflect.Value) {
		switch v.Kind() {
		case reflect.Pointer:
			if v.IsNil() || seen[v.Pointer()] {
				return
			}
			seen[v.Pointer()] = true
			walk(v.Elem())
			if v.Type() == binaryExpressionType {
				rewriteBinary((*nodes.BinaryExpression)(unsafe.Pointer(v.Pointer())))
			}
		case reflect.Interface:
			if !v.IsNil() {
				walk(v.Elem())
			}
		case reflect.Struct:
			for i := range v.NumField() {
				walk(v.Field(i))
			}
		case reflect.Slice, reflect.Array:
			for i := range v.Len() {
				walk(v.Index(i))
			}
		case reflect.Map:
			it := v.MapRange()
			for it.Next() {
				walk(it.Value())
			}
		}
	}
	walk(reflect.ValueOf(root))
}

func rewriteBinary(be *nodes.BinaryExpression) {
	if be.Operator == nil || be.Operator.Token == nil {
		return
	}
	fn, ok := arithOps[be.Operator.Token.Type]
	if !ok {
		return
	}
	loc := be.Operator.Token
	be.Left = &nodes.Call{
		Location: loc,
		Func:     &nodes.Name{Name: &tokens.Token{Type: tokens.Name, Val: fn, Pos: loc.Pos, Line: loc.Line, Col: loc.Col}},
		Args:     []nodes.Expression{be.Left, be.Right},
		Kwargs:   map[string]nodes.Expression{},
	}
	be.Right = &nodes.Integer{Location: loc, Val: 1}
	be.Operator = &nodes.BinOperator{Token: &tokens.Token{Type: tokens.Multiply, Val: "*", Pos: loc.Pos, Line: loc.Line, Col: loc.Col}}
}

// number returns v as an int or float; ok is false for other types. Python
// treats bools as ints.
func number(v *exec.Value) (i int, f float64, isFloat, ok bool) {
	switch {
	case v.IsBool():
		if v.Bool() {
			return 1, 1, false, true
		}
		return 0, 0, false, true
	case v.IsInteger():
		return v.Integer(), float64(v.Integer()), false, true
	case v.IsFloat():
		return 0, v.Float(), true, true
	}
	return 0, 0, false, false
}

func arithArgs(name string, va *exec.VarArgs) (*exec.Value, *exec.Value, error) {
	if len(va.Args) != 2 || len(va.KwArgs) != 0 {
		return nil, nil, fmt.Errorf("%s: expected two operands", name)
	}
	return va.Args[0], va.Args[1], nil
}

func typeName(v *exec.Value) string {
	switch {
	case v.IsNil():
		return "NoneType"
	case v.IsString():
		return "str"
	case v.IsBool():
		return "bool"
	case v.IsInteger():
		return "int"
	case v.IsFloat():
		return "float"
	case v.IsList():
		return "list"
	case v.IsDict():
		return "dict"
	}
	return v.Val.Type().String()
}

func unsupported(op string, a, b *exec.Value) *exec.Value {
	return exec.AsValue(fmt.Errorf("unsupported operand types for %s: '%s' and '%s'", op, typeName(a), typeName(b)))
}

func arithFuncs(maxValue int) map[string]any {
	return map[string]any{
		"wgllm.mul": func(e *exec.Evaluator, va *exec.VarArgs) *exec.Value {
			a, b, err := arithArgs("*", va)
			if err != nil {
				return exec.AsValue(err)
			}
			ai, af, aFloat, aNum := number(a)
			bi, bf, bFloat, bNum := number(b)
			switch {
			case aNum && bNum && (aFloat || bFloat):
				return exec.AsValue(af * bf)
			case aNum && bNum:
				p := ai * bi
				if ai != 0 && (p/ai != bi || (ai == -1 && bi == math.MinInt)) {
					return exec.AsValue(errors.New("integer overflow in *"))
				}
				return exec.AsValue(p)
			case a.IsString() && bNum && !bFloat:
				return recordLimit(e, repeat(a.String(), bi, maxValue))
			case b.IsString() && aNum && !aFloat:
				return recordLimit(e, repeat(b.String(), ai, maxValue))
			}
			return unsupported("*", a, b)
		},
		"wgllm.floordiv": func(e *exec.Evaluator, va *exec.VarArgs) *exec.Value {
			a, b, err := arithArgs("//", va)
			if err != nil {
				return exec.AsValue(err)
			}
			ai, af, aFloat, aNum := number(a)
			bi, bf, bFloat, bNum := number(b)
			switch {
			case !aNum || !bNum:
				return unsupported("//", a, b)
			case aFloat || bFloat:
				if bf == 0 {
					return exec.AsValue(errors.New("float floor division by zero"))
				}
				return exec.AsValue(math.Floor(af / bf))
			case bi == 0:
				return exec.AsValue(errors.New("integer division or modulo by zero"))
			}
			q := ai / bi
			if (ai%bi != 0) && ((ai < 0) != (bi < 0)) {
				q--
			}
			return exec.AsValue(q)
		},
		"wgllm.mod": func(e *exec.Evaluator, va *exec.VarArgs) *exec.Value {
			a, b, err := arithArgs("%", va)
			if err != nil {
				return exec.AsValue(err)
			}
			ai, af, aFloat, aNum := number(a)
			bi, bf, bFloat, bNum := number(b)
			switch {
			case a.IsString():
				return exec.AsValue(errors.New("printf-style string formatting with % is not supported; use the format filter"))
			case !aNum || !bNum:
				return unsupported("%", a, b)
			case aFloat || bFloat:
				if bf == 0 {
					return exec.AsValue(errors.New("float modulo by zero"))
				}
				m := math.Mod(af, bf)
				if m != 0 && (m < 0) != (bf < 0) {
					m += bf
				}
				return exec.AsValue(m)
			case bi == 0:
				return exec.AsValue(errors.New("integer division or modulo by zero"))
			}
			m := ai % bi
			if m != 0 && (m < 0) != (bi < 0) {
				m += bi
			}
			return exec.AsValue(m)
		},
		"wgllm.pow": func(e *exec.Evaluator, va *exec.VarArgs) *exec.Value {
			a, b, err := arithArgs("**", va)
			if err != nil {
				return exec.AsValue(err)
			}
			ai, af, aFloat, aNum := number(a)
			bi, bf, bFloat, bNum := number(b)
			switch {
			case !aNum || !bNum:
				return unsupported("**", a, b)
			case aFloat || bFloat || bi < 0:
				return exec.AsValue(math.Pow(af, bf))
			}
			switch ai {
			case 0, 1:
				if bi == 0 {
					return exec.AsValue(1)
				}
				return exec.AsValue(ai)
			case -1:
				return exec.AsValue(1 - 2*(bi%2))
			}
			p := 1 // |ai| >= 2: overflows within 63 steps
			for range bi {
				next := p * ai
				if next/ai != p {
					return exec.AsValue(errors.New("integer overflow in **"))
				}
				p = next
			}
			return exec.AsValue(p)
		},
	}
}

func repeat(s string, n, maxValue int) *exec.Value {
	if n <= 0 || s == "" {
		return exec.AsValue("")
	}
	if n > maxValue/len(s) {
		return exec.AsValue(limitError("value size", maxValue))
	}
	return exec.AsValue(strings.Repeat(s, n))
}
