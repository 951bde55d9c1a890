package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
	"github.com/wgllm/wgllm/runtime/model"
)

func perplexityCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "perplexity -m MODEL -f FILE [-c N] [-b N]",
		Short: "Perplexity of a text, by llama.cpp's method (second half of each chunk scored)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			file, _ := cmd.Flags().GetString("file")
			n, _ := cmd.Flags().GetInt("ctx-size")
			batch, _ := cmd.Flags().GetInt("batch")
			if batch < 0 {
				return fmt.Errorf("-b %d: want 0 (the default) or more tokens per pass", batch)
			}
			if file == "" {
				return fmt.Errorf("-f FILE is required")
			}
			text, err := os.ReadFile(file)
			if err != nil {
				return err
			}
			l, err := a.loadWith(cmd, model.Options{CtxLen: n, Batch: batch})
			if err != nil {
				return err
			}
			defer l.Close()
			res, err := l.gen.Perplexity(string(text), n, func(c int, ppl float64) {
				fmt.Fprintf(os.Stdout, "[%d]%.4f\n", c+1, ppl)
			})
			if err != nil {
				return err
			}
			fmt.Fprintf(os.Stdout, "Final estimate: PPL = %.4f +/- %.5f\n", res.PPL, res.Err)
			return nil
		},
	}
	addModelFlags(cmd)
	cmd.Flags().Lookup("ctx-size").DefValue = "512"
	_ = cmd.Flags().Set("ctx-size", "512")
	cmd.Flags().StringP("file", "f", "", "text file to score")
	cmd.Flags().IntP("batch", "b", 0, "tokens per forward pass (0: the default); 8 or fewer take the decode matvecs")
	return cmd
}
