package main

import (
	"fmt"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/mattn/go-isatty"
	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"github.com/wgllm/wgllm/internal/hub"
	"github.com/wgllm/wgllm/runtime/quantize"
)

func quantizeCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "quantize IN OUT TYPE",
		Short: "Convert a GGUF model to another type (Q4_K_M, Q8_0, ...) as llama-quantize does",
		Long: `Convert the F32, F16 or BF16 model IN (a file or a store name) to OUT.

TYPE is one of ` + strings.Join(quantize.WritableNames(), ", ") + `
(or llama.cpp's number for it). The _S/_M/_L mixes give each tensor the type
llama.cpp's llama-quantize gives it (no importance matrix): for Q4_K_M, Q6_K
for the output matrix and for attn_v and ffn_down in the first and last
eighth of the layers and every third between, Q4_K elsewhere; norms and
other vectors stay as they are. IQ4_NL and IQ4_XS need no importance matrix
(Q5_K for the first eighth of ffn_down, and for attn_v with 4 or more heads
per KV head); MXFP4_MOE is MXFP4 for the expert tensors and Q8_0 for every
other matrix. OUT appears only when complete.`,
		Args: cobra.ExactArgs(3),
		RunE: func(cmd *cobra.Command, args []string) error {
			in, err := a.resolveModel(args[0])
			if err != nil {
				return err
			}
			ft, err := quantize.ParseFileType(args[2])
			if err != nil {
				return err
			}
			threads, _ := cmd.Flags().GetInt("threads")
			opt := quantize.Options{Threads: threads}
			var bar *progressbar.ProgressBar
			if isatty.IsTerminal(os.Stderr.Fd()) {
				opt.Progress = func(i, n int, p quantize.TensorPlan) {
					if bar == nil {
						bar = progressbar.NewOptions(n, progressbar.OptionSetWriter(os.Stderr), progressbar.OptionShowCount(),
							progressbar.OptionSetWidth(30), progressbar.OptionClearOnFinish(), progressbar.OptionThrottle(100*time.Millisecond))
					}
					bar.Describe(fmt.Sprintf("%-28s %s -> %s", p.Tensor.Name, p.Tensor.Type, p.Type))
					_ = bar.Set(i)
				}
			} else {
				opt.Progress = func(i, n int, p quantize.TensorPlan) {
					a.log.Debug().Int("tensor", i+1).Int("of", n).Str("name", p.Tensor.Name).Stringer("from", p.Tensor.Type).Stringer("to", p.Type).Msg("converting")
				}
			}
			t0 := time.Now()
			res, err := quantize.Convert(in, args[1], ft, opt)
			if bar != nil {
				_ = bar.Finish()
			}
			if err != nil {
				return err
			}
			for _, p := range res.Fallbacks {
				a.log.Warn().Str("tensor", p.Tensor.Name).Uint64("columns", p.Tensor.Dims[0]).Stringer("type", p.Type).
					Msg("row length does not fit the mix's type; used the fallback type")
			}
			var types []string
			for t, n := range res.ByType {
				types = append(types, fmt.Sprintf("%s %d", t, n))
			}
			sort.Strings(types)
			a.log.Info().Str("in", in).Str("out", args[1]).Stringer("type", ft).Int("tensors", res.Tensors).
				Str("tensor_types", strings.Join(types, ", ")).Dur("took", time.Since(t0).Round(time.Millisecond)).Msg("quantized")
			_, err = fmt.Fprintf(os.Stdout, "%s: %s, %s -> %s of tensor data (%s)\n", args[1], ft,
				hub.HumanBytes(int64(res.InBytes)), hub.HumanBytes(int64(res.OutBytes)), strings.Join(types, ", "))
			return err
		},
	}
	cmd.Flags().IntP("threads", "t", 0, "threads encoding each tensor (0: all cores)")
	return cmd
}
