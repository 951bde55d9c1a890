package main

import (
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"github.com/wgllm/wgllm/runtime/gguf"
	"github.com/wgllm/wgllm/runtime/tokenizer"
)

func tokenizeCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "tokenize -m MODEL [--no-bos] (--stdin | TEXT)",
		Short: "Print the token ids of a text on one line, separated by spaces",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			stdin, _ := cmd.Flags().GetBool("stdin")
			noBOS, _ := cmd.Flags().GetBool("no-bos")
			var text string
			switch {
			case stdin && len(args) == 0:
				b, err := io.ReadAll(os.Stdin)
				if err != nil {
					return err
				}
				text = string(b)
			case !stdin && len(args) == 1:
				text = args[0]
			default:
				return fmt.Errorf("give either --stdin or one TEXT argument")
			}
			path, err := a.modelPath(cmd)
			if err != nil {
				return err
			}
			f, err := gguf.Open(path)
			if err != nil {
				return err
			}
			defer f.Close()
			tok, err := tokenizer.FromGGUF(f)
			if err != nil {
				return err
			}
			ids := tok.Encode(text, tok.AddBOS() && !noBOS)
			parts := make([]string, len(ids))
			for i, id := range ids {
				parts[i] = strconv.Itoa(int(id))
			}
			_, err = fmt.Fprintln(os.Stdout, strings.Join(parts, " "))
			return err
		},
	}
	cmd.Flags().StringP("model", "m", "", "GGUF model file")
	cmd.Flags().Bool("no-bos", false, "do not add the BOS token")
	cmd.Flags().Bool("stdin", false, "read the text from standard input")
	return cmd
}
