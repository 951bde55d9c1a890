package main

import (
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"github.com/wgllm/wgllm/ops"
	"github.com/wgllm/wgllm/runtime/gguf"
	"github.com/wgllm/wgllm/runtime/model"
)

func infoCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "info -m MODEL",
		Short: "Architecture, hyper-parameters, tensor types and sizes, and the GPU memory the model needs",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if shape, _ := cmd.Flags().GetString("shape"); shape != "" {
				return infoShape(a, cmd, shape)
			}
			path, err := a.modelPath(cmd)
			if err != nil {
				return err
			}
			ctxLen, _ := cmd.Flags().GetInt("ctx-size")
			f, err := gguf.Open(path)
			if err != nil {
				return err
			}
			defer f.Close()
			w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
			defer w.Flush()
			fmt.Fprintf(w, "file\t%s\n", path)
			fmt.Fprintf(w, "gguf version\t%d\n", f.Version)
			fmt.Fprintf(w, "file size\t%s\n", bytesHuman(f.FileSize))
			if name, ok := f.String("general.name"); ok {
				fmt.Fprintf(w, "name\t%s\n", name)
			}
			cfg, cfgErr := model.ConfigFromGGUF(f)
			if cfgErr == nil {
				fmt.Fprintf(w, "architecture\t%s\n", cfg.Arch)
				fmt.Fprintf(w, "embedding / layers\t%d / %d\n", cfg.Dim, cfg.Layers)
				fmt.Fprintf(w, "heads / kv heads / head dim\t%d / %d / %d\n", cfg.Heads, cfg.KVHeads, cfg.HeadDim)
				fmt.Fprintf(w, "feed-forward\t%d\n", cfg.FFN)
				fmt.Fprintf(w, "vocabulary\t%d\n", cfg.Vocab)
				fmt.Fprintf(w, "context length\t%d\n", cfg.CtxLen)
				fmt.Fprintf(w, "rope\t%s, base %g, freq scale %g, %d dims\n", cfg.RopeMode, cfg.RopeBase, cfg.RopeScale, cfg.RopeDims)
				fmt.Fprintf(w, "rms eps\t%s\n", strconv.FormatFloat(cfg.NormEps, 'g', -1, 32))
				fmt.Fprintf(w, "output\t%s\n", map[bool]string{true: "tied to token_embd", false: "untied"}[cfg.TiedOutput])
				if cfg.RopeScaling != "" && cfg.RopeScaling != "none" {
					fmt.Fprintf(w, "rope scaling\t%s (original context %d)\n", cfg.RopeScaling, cfg.RopeOrigCtx)
				}
				notes, err := model.Describe(f)
				if err != nil {
					return err
				}
				for _, n := range notes {
					fmt.Fprintf(w, "  %s\n", n)
				}
			} else {
				fmt.Fprintf(w, "architecture\t%s (cannot run: %v)\n", f.Architecture(), cfgErr)
			}
			counts, sizes := map[gguf.GGMLType]int{}, map[gguf.GGMLType]uint64{}
			for _, t := range f.Tensors {
				counts[t.Type]++
				sizes[t.Type] += t.Size
			}
			types := make([]gguf.GGMLType, 0, len(counts))
			for t := range counts {
				types = append(types, t)
			}
			sort.Slice(types, func(i, j int) bool { return sizes[types[i]] > sizes[types[j]] })
			fmt.Fprintf(w, "tensors\t%d\n", len(f.Tensors))
			for _, t := range types {
				fmt.Fprintf(w, "  %s\t%d tensors, %s\n", t, counts[t], bytesHuman(sizes[t]))
			}
			if cfgErr == nil {
				kt, err := kvType(a.cfg.GetString("kv.dtype"))
				if err != nil {
					return err
				}
				est, err := model.Estimate(f, model.Options{CtxLen: ctxLen, KVType: kt})
				if err != nil {
					return err
				}
				vram, _ := cmd.Flags().GetFloat64("vram")
				printMemory(w, cfg, est, kt, vram)
			}
			return nil
		},
	}
	addModelFlags(cmd)
	cmd.Flags().String("shape", "", "show a benchmark shape instead of a file: "+strings.Join(model.ShapeNames(), ", "))
	cmd.Flags().String("type", "q4_k_m", "weight type with --shape")
	cmd.Flags().Float64("vram", 24, "GPU memory in GB (10^9 bytes) to check the model against")
	return cmd
}

// infoShape is info for a benchmark shape (what a file of it would need).
func infoShape(a *app, cmd *cobra.Command, shape string) error {
	cfg, ok := model.Shapes[shape]
	if !ok {
		return fmt.Errorf("unknown shape %q (known: %s)", shape, strings.Join(model.ShapeNames(), ", "))
	}
	typName, _ := cmd.Flags().GetString("type")
	typ, err := model.ParseWeightType(typName)
	if err != nil {
		return err
	}
	ctxLen, _ := cmd.Flags().GetInt("ctx-size")
	kt, err := kvType(a.cfg.GetString("kv.dtype"))
	if err != nil {
		return err
	}
	c, est, err := model.EstimateShape(cfg, typ, model.Options{CtxLen: ctxLen, KVType: kt})
	if err != nil {
		return err
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	defer w.Flush()
	fmt.Fprintf(w, "shape\t%s (%s weights, random)\n", shape, typName)
	fmt.Fprintf(w, "architecture\t%s\n", c.Arch)
	fmt.Fprintf(w, "embedding / layers\t%d / %d\n", c.Dim, c.Layers)
	fmt.Fprintf(w, "heads / kv heads / head dim\t%d / %d / %d\n", c.Heads, c.KVHeads, c.HeadDim)
	vram, _ := cmd.Flags().GetFloat64("vram")
	printMemory(w, c, est, kt, vram)
	return nil
}

// printMemory shows the GPU memory a model needs, the experts apart, and
// the sum against a card of vram GB.
func printMemory(w io.Writer, c model.Config, est model.MemoryEstimate, kt ops.DType, vram float64) {
	if c.Experts > 0 {
		fmt.Fprintf(w, "experts\t%d per layer, %d per token, expert feed-forward %d", c.Experts, c.ExpertsUsed, c.ExpertFFN)
		if c.SharedFFN > 0 {
			fmt.Fprintf(w, ", shared expert %d", c.SharedFFN)
		}
		fmt.Fprintln(w)
		fmt.Fprintf(w, "weights\t%s = %s dense + %s experts\n", bytesHuman(est.Weights), bytesHuman(est.Weights-est.Experts), bytesHuman(est.Experts))
		fmt.Fprintf(w, "read per token\t%s = %s dense + %d/%d × %s experts\n", bytesHuman(est.PerToken),
			bytesHuman(est.Weights-est.Experts), c.ExpertsUsed, c.Experts, bytesHuman(est.Experts))
	}
	fmt.Fprintf(w, "kv cache\t%s, %d bytes per token (K and V of %d layers × %d kv heads × %d head dim) × %d tokens = %s\n",
		kt, est.KVTokenBytes, c.Layers, c.KVHeads, c.HeadDim, est.KVTokens, bytesHuman(est.KV))
	fmt.Fprintf(w, "gpu memory\t%s (weights %s, kv cache %s, scratch %s)\n", bytesHuman(est.Total()),
		bytesHuman(est.Weights), bytesHuman(est.KV), bytesHuman(est.Scratch))
	if vram > 0 {
		fits := "fits"
		if float64(est.Total()) > vram*1e9 {
			fits = "does not fit"
		}
		fmt.Fprintf(w, "on a %g GB card\t%s: %.2f GB weights + %.2f GB kv cache + %.2f GB scratch = %.2f GB of %g GB\n", vram, fits,
			float64(est.Weights)/1e9, float64(est.KV)/1e9, float64(est.Scratch)/1e9, float64(est.Total())/1e9, vram)
	}
}
