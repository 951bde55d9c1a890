package main

import (
	"bufio"
	"fmt"
	"os"

	"github.com/spf13/cobra"
	"github.com/wgllm/wgllm/runtime/engine"
	"github.com/wgllm/wgllm/runtime/sample"
)

func runCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "run -m MODEL -p PROMPT",
		Short: "Generate a continuation of a prompt; stdout gets only the generated text, streamed",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f := cmd.Flags()
			prompt, _ := f.GetString("prompt")
			n, _ := f.GetInt("n-predict")
			ctxLen, _ := f.GetInt("ctx-size")
			p := sample.DefaultParams()
			p.Temperature, _ = f.GetFloat32("temp")
			p.TopK, _ = f.GetInt("top-k")
			p.TopP, _ = f.GetFloat32("top-p")
			p.MinP, _ = f.GetFloat32("min-p")
			p.RepeatPenalty, _ = f.GetFloat32("repeat-penalty")
			p.Seed, _ = f.GetUint64("seed")
			if err := p.Validate(); err != nil {
				return err
			}
			l, err := a.load(cmd, ctxLen)
			if err != nil {
				return err
			}
			defer l.Close()
			out := bufio.NewWriter(os.Stdout)
			st, err := l.gen.Generate(engine.Request{Prompt: prompt, MaxTokens: n, Sampling: p}, func(s string) error {
				if _, err := out.WriteString(s); err != nil {
					return err
				}
				return out.Flush() // streamed as produced
			})
			if ferr := out.Flush(); err == nil {
				err = ferr
			}
			if err != nil {
				return err
			}
			fmt.Fprintln(os.Stdout)
			a.log.Info().Int("prompt_tokens", st.PromptTokens).Int("completion_tokens", st.CompletionTokens).
				Str("finish_reason", st.FinishReason).
				Float64("prefill_tok_s", float64(st.PromptTokens)/st.Prefill.Seconds()).
				Float64("decode_tok_s", float64(st.CompletionTokens)/st.Decode.Seconds()).Msg("done")
			return nil
		},
	}
	addModelFlags(cmd)
	f := cmd.Flags()
	f.StringP("prompt", "p", "", "prompt text")
	f.IntP("n-predict", "n", 128, "most tokens to generate")
	f.Float32("temp", 0.8, "temperature (0: greedy)")
	f.Uint64("seed", 0, "random seed (same seed and settings give the same text)")
	f.Int("top-k", 40, "top-k (0: off)")
	f.Float32("top-p", 0.95, "top-p (1: off)")
	f.Float32("min-p", 0.05, "min-p (0: off)")
	f.Float32("repeat-penalty", 1.0, "repetition penalty (1: off)")
	return cmd
}
