package model

import (
	"fmt"
	"reflect"
	"strconv"
	"strings"

	"github.com/wgllm/wgllm/ops"
	"github.com/wgllm/wgllm/runtime/gguf"
)

// Weight is one GGUF tensor bound to a field of an architecture's weight
// struct. Name is the tensor it was bound to ("" when an optional tensor
// is absent); on the GPU the embedded Tensor holds it.
type Weight struct {
	ops.Tensor
	Name string
}

// Has reports whether the tensor was bound (optional tensors may be absent).
func (w Weight) Has() bool { return w.Name != "" }

// Weights are bound by struct tags:
//
//	Q Weight `gguf:"attn_q.weight,unless=attn_qkv.weight" shape:"q,dim"`
//
// gguf names the tensor (inside a layer struct, below "blk.N."), with
// alternatives after '|' tried in order (`output.weight|token_embd.weight`:
// a tied output), and options after ',': "opt" (may be absent) and
// "unless=NAME" (required unless the tensor NAME of the same layer exists).
// shape lists the dimensions outermost first, as ops shapes are (a matrix
// is [rows = outputs, cols = inputs]), by the symbols of Config.dims. A
// struct field without a tag is bound in place (shared pieces such as
// AttnWeights); a slice field tagged `gguf:"blk"` gets one element per
// layer, bound below "blk.N.".

// slot is one tagged Weight field of a bound struct.
type slot struct {
	names  []string // candidates, full names
	unless string   // full name of the tensor that makes this one optional
	opt    bool
	shape  []int
	hint   string // said after a shape mismatch: the metadata the shape comes from
	w      *Weight
}

// slots walks the weight struct v (a pointer) and lists its tensor slots,
// sizing every `gguf:"blk"` slice to the layer count first.
func slots(v any, c Config) ([]slot, error) {
	dims := c.dims()
	var out []slot
	var walk func(rv reflect.Value, prefix string) error
	walk = func(rv reflect.Value, prefix string) error {
		rt := rv.Type()
		for i := 0; i < rt.NumField(); i++ {
			f := rt.Field(i)
			if !f.IsExported() {
				continue
			}
			tag, hasTag := f.Tag.Lookup("gguf")
			fv := rv.Field(i)
			switch {
			case f.Type == reflect.TypeOf(Weight{}):
				if !hasTag {
					return fmt.Errorf("model: weight field %s has no gguf tag", f.Name)
				}
				s, err := parseSlot(tag, f.Tag.Get("shape"), prefix, dims)
				if err != nil {
					return fmt.Errorf("model: field %s: %w", f.Name, err)
				}
				s.w = fv.Addr().Interface().(*Weight)
				out = append(out, s)
			case f.Type.Kind() == reflect.Slice && tag == "blk":
				fv.Set(reflect.MakeSlice(f.Type, c.Layers, c.Layers))
				for l := 0; l < c.Layers; l++ {
					if err := walk(fv.Index(l), fmt.Sprintf("blk.%d.", l)); err != nil {
						return err
					}
				}
			case f.Type.Kind() == reflect.Struct && !hasTag:
				if err := walk(fv, prefix); err != nil {
					return err
				}
			case f.Type.Kind() == reflect.Struct && (tag == ",experts" || tag == ",dense"):
				// A piece bound only in models with experts, or only without
				// (llama's FFN: dense, or Mixtral's experts).
				if (tag == ",experts") == (c.Experts > 0) {
					if err := walk(fv, prefix); err != nil {
						return err
					}
				}
			}
		}
		return nil
	}
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Pointer || rv.Elem().Kind() != reflect.Struct {
		return nil, fmt.Errorf("model: weights must be a pointer to a struct, not %T", v)
	}
	return out, walk(rv.Elem(), "")
}

func parseSlot(tag, shape, prefix string, dims map[string]int) (slot, error) {
	parts := strings.Split(tag, ",")
	var s slot
	for _, n := range strings.Split(parts[0], "|") {
		full := n
		if !strings.HasPrefix(n, "token_embd.") && !strings.HasPrefix(n, "output") {
			full = prefix + n
		}
		s.names = append(s.names, full)
	}
	for _, o := range parts[1:] {
		switch {
		case o == "opt":
			s.opt = true
		case strings.HasPrefix(o, "unless="):
			s.unless = prefix + strings.TrimPrefix(o, "unless=")
		default:
			return s, fmt.Errorf("unknown gguf tag option %q", o)
		}
	}
	for _, d := range strings.Split(shape, ",") {
		if n, err := strconv.Atoi(d); err == nil {
			s.shape = append(s.shape, n)
			continue
		}
		n, ok := dims[d]
		if !ok {
			return s, fmt.Errorf("unknown shape symbol %q", d)
		}
		if d == "exp" {
			s.hint = fmt.Sprintf(" (the metadata's expert_count is %d)", n)
		}
		s.shape = append(s.shape, n)
	}
	return s, nil
}

// boundTensor is a slot matched to a tensor of the file.
type boundTensor struct {
	slot
	info gguf.TensorInfo
	dt   ops.DType
}

// match finds every slot's tensor in f and checks its shape and type, all
// before anything touches the GPU, so a bad file is refused naming the
// tensor. Absent optional tensors are left unbound.
func match(f *gguf.File, ss []slot) ([]boundTensor, error) {
	var out []boundTensor
	for _, s := range ss {
		var ti gguf.TensorInfo
		found := false
		for _, n := range s.names {
			if ti, found = f.Tensor(n); found {
				break
			}
		}
		if !found {
			optional := s.opt
			if s.unless != "" {
				_, optional = f.Tensor(s.unless)
			}
			if optional {
				continue
			}
			return nil, fmt.Errorf("model: tensor %s is missing", strings.Join(s.names, " or "))
		}
		if err := checkShape(ti, s.shape); err != nil {
			return nil, fmt.Errorf("%w%s", err, s.hint)
		}
		dt, err := DTypeOf(ti.Type)
		if err != nil {
			return nil, fmt.Errorf("%w (tensor %s)", err, ti.Name)
		}
		if err := checkBlocks(ti, dt); err != nil {
			return nil, err
		}
		out = append(out, boundTensor{slot: s, info: ti, dt: dt})
	}
	return out, nil
}

// checkShape compares GGUF dims (innermost first) with an ops shape
// (outermost first); missing outer GGUF dims count as 1.
func checkShape(ti gguf.TensorInfo, shape []int) error {
	if len(ti.Dims) > len(shape) {
		for _, d := range ti.Dims[len(shape):] {
			if d != 1 {
				return fmt.Errorf("model: tensor %s has dims %v (innermost first), want shape %v", ti.Name, ti.Dims, shape)
			}
		}
	}
	for i := range shape {
		d := uint64(1)
		if i < len(ti.Dims) {
			d = ti.Dims[i]
		}
		if d != uint64(shape[len(shape)-1-i]) {
			return fmt.Errorf("model: tensor %s has dims %v (innermost first), want shape %v", ti.Name, ti.Dims, shape)
		}
	}
	return nil
}

// checkBlocks refuses a block-quantised tensor whose rows are not whole
// blocks (the kernels read rows of whole blocks) and vectors not stored as
// F32 (the kernels read norms and biases as f32, as llama.cpp stores them).
func checkBlocks(ti gguf.TensorInfo, dt ops.DType) error {
	if strings.HasSuffix(ti.Name, ".bias") && dt != ops.F32 {
		return fmt.Errorf("model: tensor %s is %s: biases must be F32", ti.Name, ti.Type)
	}
	if len(ti.Dims) == 1 && dt != ops.F32 {
		return fmt.Errorf("model: tensor %s is %s: vectors (norms, biases, rope factors) must be F32", ti.Name, ti.Type)
	}
	if dt.Quantized() && len(ti.Dims) > 0 && ti.Dims[0]%uint64(dt.BlockSize()) != 0 {
		return fmt.Errorf("model: tensor %s of type %s has rows of %d values, not a multiple of its %d-value blocks",
			ti.Name, ti.Type, ti.Dims[0], dt.BlockSize())
	}
	return nil
}

// tensorNames lists the names a weight struct binds in f, in order.
func tensorNames(bound []boundTensor) []string {
	names := make([]string, len(bound))
	for i, b := range bound {
		names[i] = b.info.Name
	}
	return names
}
