package main

import (
	"fmt"
	"os"
	"sort"
	"strconv"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"github.com/wgllm/wgllm/runtime/gguf"
	"github.com/wgllm/wgllm/runtime/model"
)

func infoCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "info -m MODEL",
		Short: "Architecture, hyper-parameters, tensor types and sizes, and the GPU memory the model needs",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
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
				fmt.Fprintf(w, "gpu memory\t%s (weights %s, kv cache %s, scratch %s)\n", bytesHuman(est.Total()),
					bytesHuman(est.Weights), bytesHuman(est.KV), bytesHuman(est.Scratch))
			}
			return nil
		},
	}
	addModelFlags(cmd)
	return cmd
}
