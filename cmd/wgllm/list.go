package main

import (
	"fmt"
	"os"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"github.com/wgllm/wgllm/internal/hub"
	"github.com/wgllm/wgllm/runtime/gguf"
	"github.com/wgllm/wgllm/runtime/quantize"
)

func listCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List the models in the store: name, size, type, path",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			st := a.store()
			models, err := st.List()
			if err != nil {
				return err
			}
			if len(models) == 0 {
				a.log.Info().Str("store", st.Dir).Msg("no models in the store; add one with wgllm pull")
			}
			w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
			fmt.Fprintln(w, "NAME\tSIZE\tTYPE\tPATH")
			for _, m := range models {
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", m.Name, hub.HumanBytes(m.Size), fileType(m.Path), m.Path)
			}
			return w.Flush()
		},
	}
}

// fileType names a model file's quantization, or says it is unreadable.
func fileType(path string) string {
	g, err := gguf.Open(path)
	if err != nil {
		return "unreadable"
	}
	defer g.Close()
	return quantize.Describe(g)
}

func rmCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:     "rm NAME...",
		Aliases: []string{"remove"},
		Short:   "Remove models (or interrupted pulls) from the store",
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			for _, name := range args {
				m, err := a.store().Remove(name)
				if err != nil {
					return err
				}
				fmt.Fprintf(os.Stdout, "removed %s\n", m.Name)
			}
			return nil
		},
	}
}
