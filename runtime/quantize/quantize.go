// Package quantize converts a GGUF model to another file type (Q4_K_M,
// Q8_0, F16, ...) as llama.cpp's llama-quantize does without an importance
// matrix: the same type for each tensor (Plan), the same encodings
// (runtime/quant's bit-exact ggml quantisers), the metadata carried over
// with general.file_type set, and the tensors in llama.cpp's order, so the
// output is llama-quantize's byte for byte (tested on the kjv-30m files).
package quantize

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/wgllm/wgllm/runtime/gguf"
	"github.com/wgllm/wgllm/runtime/quant"
)

// quantizationVersion is ggml's GGML_QNT_VERSION, written to every
// quantised file as general.quantization_version.
const quantizationVersion = 2

// Options tune Convert.
type Options struct {
	// Threads encode a tensor's rows in parallel; 0 means GOMAXPROCS.
	Threads int
	// Progress, when set, is called as each tensor is about to be written
	// (i counts from 0).
	Progress func(i, n int, p TensorPlan)
}

// Result summarises a conversion.
type Result struct {
	Tensors   int
	InBytes   uint64 // tensor data read
	OutBytes  uint64 // tensor data written
	ByType    map[gguf.GGMLType]int
	Fallbacks []TensorPlan // tensors whose row length did not fit the mix's type
}

// Convert writes the model at inPath to outPath as file type ft. The file
// appears under outPath only once it is complete and synced (it is written
// to a temporary name beside it, then renamed); on an error nothing is left
// behind. Tensors that change type must be F32, F16 or BF16: re-quantising
// an already quantised tensor loses precision twice and is refused, as
// llama-quantize refuses it by default.
func Convert(inPath, outPath string, ft FileType, opt Options) (Result, error) {
	g, err := gguf.Open(inPath)
	if err != nil {
		return Result{}, err
	}
	defer g.Close()
	if err := notSameFile(inPath, outPath); err != nil {
		return Result{}, err
	}
	plans, err := Plan(g, ft)
	if err != nil {
		return Result{}, err
	}
	res := Result{Tensors: len(plans), ByType: map[gguf.GGMLType]int{}}
	for _, p := range plans {
		if p.Type != p.Tensor.Type && p.Tensor.Type.BlockSize() != 1 {
			return Result{}, fmt.Errorf("quantize: tensor %s is already %s: re-quantising is not supported; convert from an F32, F16 or BF16 model",
				p.Tensor.Name, p.Tensor.Type)
		}
		if p.Type != p.Tensor.Type && !quant.Supported(p.Type) {
			return Result{}, fmt.Errorf("quantize: tensor %s: no encoder for %s", p.Tensor.Name, p.Type)
		}
		res.ByType[p.Type]++
		res.InBytes += p.Tensor.Size
		if p.Fallback {
			res.Fallbacks = append(res.Fallbacks, p)
		}
	}
	threads := opt.Threads
	if threads <= 0 {
		threads = runtime.GOMAXPROCS(0)
	}
	tensors := make([]gguf.TensorToWrite, len(plans))
	for i, p := range plans {
		res.OutBytes += uint64(p.Type.RowBytes(int(p.Tensor.Dims[0]))) * (p.Tensor.Elements() / p.Tensor.Dims[0])
		tensors[i] = gguf.TensorToWrite{Name: p.Tensor.Name, Dims: p.Tensor.Dims, Type: p.Type, Encode: func() ([]byte, error) {
			if opt.Progress != nil {
				opt.Progress(i, len(plans), p)
			}
			src, err := g.TensorBytes(p.Tensor)
			if err != nil {
				return nil, err
			}
			if p.Type == p.Tensor.Type {
				return src, nil
			}
			return encodeRows(p, src, threads)
		}}
	}
	if err := writeAtomic(outPath, metadata(g, ft), tensors); err != nil {
		return Result{}, err
	}
	return res, nil
}

// metadata is the input's metadata in order, less the keys llama.cpp
// drops (split information) or rewrites (appended at the end, as its
// gguf_set_val does: quantization version, then file type).
func metadata(g *gguf.File, ft FileType) []gguf.KV {
	meta := make([]gguf.KV, 0, len(g.Keys)+2)
	for _, k := range g.Keys {
		switch k {
		case "general.quantization_version", "general.file_type", "split.no", "split.count", "split.tensors.count":
			continue
		}
		meta = append(meta, gguf.KV{Key: k, Value: g.Metadata[k]})
	}
	return append(meta,
		gguf.KV{Key: "general.quantization_version", Value: gguf.Val(uint32(quantizationVersion))},
		gguf.KV{Key: "general.file_type", Value: gguf.Val(uint32(ft))})
}

// encodeRows decodes each row of src to float32 and encodes it as p.Type,
// rows shared among threads in chunks of about 64K elements.
func encodeRows(p TensorPlan, src []byte, threads int) ([]byte, error) {
	from, to := p.Tensor.Type, p.Type
	cols := int(p.Tensor.Dims[0])
	rows := int(p.Tensor.Elements() / p.Tensor.Dims[0])
	inRow, outRow := from.RowBytes(cols), to.RowBytes(cols)
	if len(src) < rows*inRow {
		return nil, fmt.Errorf("quantize: tensor %s has %d bytes, want %d", p.Tensor.Name, len(src), rows*inRow)
	}
	out := make([]byte, rows*outRow)
	chunk := max(1, (1<<16)/cols)
	var next atomic.Int64
	var failed atomic.Bool
	errs := make([]error, threads)
	var wg sync.WaitGroup
	for w := range min(threads, (rows+chunk-1)/chunk) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			row := make([]float32, cols)
			for !failed.Load() {
				first := int(next.Add(int64(chunk))) - chunk
				if first >= rows {
					return
				}
				for r := first; r < min(first+chunk, rows); r++ {
					err := quant.DequantizeRow(from, src[r*inRow:(r+1)*inRow], row)
					if err == nil {
						err = quant.QuantizeRow(to, row, out[r*outRow:(r+1)*outRow])
					}
					if err != nil {
						errs[w] = fmt.Errorf("quantize: tensor %s, row %d: %w", p.Tensor.Name, r, err)
						failed.Store(true)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return out, nil
}

// notSameFile refuses to overwrite the input (its mapping is being read).
func notSameFile(in, out string) error {
	a, err := os.Stat(in)
	if err != nil {
		return err
	}
	b, err := os.Stat(out)
	if err != nil {
		return nil // the output does not exist yet
	}
	if os.SameFile(a, b) {
		return fmt.Errorf("quantize: the output %s is the input file", out)
	}
	return nil
}

// writeAtomic writes the file under a temporary name in the same
// directory, syncs it and renames it into place, so outPath never holds a
// partial file; it removes the temporary file on failure.
func writeAtomic(outPath string, meta []gguf.KV, tensors []gguf.TensorToWrite) (err error) {
	dir := filepath.Dir(outPath)
	f, err := os.CreateTemp(dir, "."+filepath.Base(outPath)+".*.tmp")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	bw := bufio.NewWriterSize(f, 4<<20)
	if err = gguf.Write(bw, meta, tensors); err != nil {
		return err
	}
	if err = bw.Flush(); err != nil {
		return err
	}
	if err = f.Chmod(0o644); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	if err = os.Rename(f.Name(), outPath); err != nil {
		return err
	}
	syncDir(dir)
	return nil
}

// syncDir makes a rename durable where directories can be synced; a
// failure here only weakens durability after a crash, so it is ignored.
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
}
