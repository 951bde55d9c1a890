package main

import (
	"encoding/json"
	"fmt"
	"math"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/wgllm/wgllm/ops"
	"github.com/wgllm/wgllm/runtime/gguf"
	"github.com/wgllm/wgllm/runtime/gpu"
	"github.com/wgllm/wgllm/runtime/model"
)

// benchResult is one test, with llama-bench's JSON field names.
type benchResult struct {
	Model       string    `json:"model_type"`
	ModelSize   uint64    `json:"model_size"`
	ModelParams uint64    `json:"model_n_params"`
	Adapter     string    `json:"gpu_info"`
	Backend     string    `json:"backends"`
	NPrompt     int       `json:"n_prompt"`
	NGen        int       `json:"n_gen"`
	AvgTS       float64   `json:"avg_ts"`
	StddevTS    float64   `json:"stddev_ts"`
	AvgNS       float64   `json:"avg_ns"`
	Samples     []float64 `json:"samples_ts"`
	NDepth      int       `json:"n_depth"`
	TypeK       string    `json:"type_k"` // the KV cache type, as llama-bench names it
	TypeV       string    `json:"type_v"`
	KVBytes     uint64    `json:"kv_bytes_per_token"`
}

func benchCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bench (-m MODEL | --shape NAME --type TYPE) [-p 512] [-n 128] [-r 3] [--json]",
		Short: "Prefill (pp) and decode (tg) tokens/s, like llama-bench",
		Long: "Measures prompt processing of -p tokens in one batch and generation of -n tokens one at a time\n" +
			"(greedy, the token picked on the GPU), each repeated -r times from an empty context.\n" +
			"--shape synthesises a model of a real shape with random weights in GPU memory: " + strings.Join(model.ShapeNames(), ", ") + ".",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f := cmd.Flags()
			if out, _ := f.GetString("write"); out != "" {
				return writeShape(cmd, out)
			}
			nP, _ := f.GetInt("n-prompt")
			nG, _ := f.GetInt("n-gen")
			reps, _ := f.GetInt("repetitions")
			asJSON, _ := f.GetBool("json")
			depth, _ := f.GetInt("depth")
			if reps < 1 || nP < 0 || nG < 0 || nP+nG == 0 || depth < 0 {
				return fmt.Errorf("need -r ≥ 1, -p or -n > 0 and --depth ≥ 0")
			}
			par, _ := f.GetString("parallel")
			ns, err := parseParallel(par)
			if err != nil {
				return err
			}
			profile, _ := f.GetBool("profile")
			gopt := a.gpuOptions()
			gopt.Timestamps = profile
			ctx, err := a.openGPU(gopt)
			if err != nil {
				return err
			}
			defer ctx.Close()
			defer ops.ReleaseAttentionScratch(ctx)
			defer ops.ReleaseQ8Scratch(ctx)
			kt, err := kvType(a.cfg.GetString("kv.dtype"))
			if err != nil {
				return err
			}
			if ns != nil {
				if depth > 0 {
					return fmt.Errorf("--depth applies to the single-sequence tests, not --parallel")
				}
				return a.benchParallel(cmd, ctx, kt, ns, nP, nG, asJSON, profile)
			}
			opt := model.Options{CtxLen: depth + max(nP, nG) + 1, KVType: kt, Batch: max(nP, min(depth, depthChunk), 1)}
			t0 := time.Now()
			m, label, closeModel, err := a.benchModel(cmd, ctx, opt)
			if err != nil {
				return err
			}
			defer closeModel()
			w, kvb, s := m.Memory()
			a.log.Info().Str("model", label).Dur("load", time.Since(t0)).Uint64("weights_bytes", w).Uint64("expert_bytes", func() uint64 { e, _ := m.ExpertBytes(); return e }()).
				Uint64("kv_bytes", kvb).Uint64("scratch_bytes", s).Str("adapter", ctx.Adapter.Name).Msg("bench model ready")
			var results []benchResult
			base := benchResult{Model: label, ModelSize: w, ModelParams: params(m), Adapter: ctx.Adapter.Name, Backend: "WebGPU/" + string(ctx.Adapter.Impl) + "/" + ctx.Adapter.Backend,
				TypeK: kt.String(), TypeV: kt.String(), KVBytes: m.KV.Config().TokenBytes()}
			rng := rand.New(rand.NewSource(42))
			tokens := make([]int32, max(nP, 1))
			for i := range tokens {
				tokens[i] = int32(rng.Intn(m.Cfg.Vocab))
			}
			seq, err := m.KV.Acquire()
			if err != nil {
				return err
			}
			// --depth: the context every test starts from, filled once
			// (untimed) and cut back to before each repetition.
			if err := fillDepth(m, seq, depth, rng); err != nil {
				return err
			}
			base.NDepth = depth
			run := func(nPrompt, nGen int) error {
				r := base
				r.NPrompt, r.NGen = nPrompt, nGen
				// One untimed warm-up builds pipelines and bind groups.
				for rep := -1; rep < reps; rep++ {
					if err := m.KV.Truncate(seq, depth); err != nil {
						return err
					}
					start := time.Now()
					if nPrompt > 0 {
						if _, err := m.Forward(seq, tokens[:nPrompt], model.NextGreedy, nil); err != nil {
							return err
						}
					} else {
						next := tokens[0]
						for i := 0; i < nGen; i++ {
							if next, err = m.Forward(seq, []int32{next}, model.NextGreedy, nil); err != nil {
								return err
							}
						}
					}
					el := time.Since(start)
					if rep >= 0 {
						r.Samples = append(r.Samples, float64(nPrompt+nGen)/el.Seconds())
						r.AvgNS += float64(el.Nanoseconds()) / float64(reps)
					}
				}
				r.AvgTS, r.StddevTS = meanStd(r.Samples)
				results = append(results, r)
				return nil
			}
			if nP > 0 {
				if err := run(nP, 0); err != nil {
					return err
				}
			}
			if nG > 0 {
				if err := run(0, nG); err != nil {
					return err
				}
			}
			var profiles []opProfile
			if profile {
				if profiles, err = profileRuns(ctx, m, seq, depth, tokens, nP, nG); err != nil {
					return err
				}
			}
			if asJSON {
				enc := json.NewEncoder(os.Stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(results)
			}
			tw := tabwriter.NewWriter(os.Stdout, 0, 0, 1, ' ', tabwriter.AlignRight|tabwriter.Debug)
			fmt.Fprintln(tw, "model\tsize\tparams\tbackend\ttest\tt/s\t")
			for _, r := range results {
				test := testName(r.NPrompt, r.NGen, r.NDepth)
				fmt.Fprintf(tw, "%s\t%s\t%.2f B\t%s\t%s\t%.2f ± %.2f\t\n", r.Model, bytesHuman(r.ModelSize), float64(r.ModelParams)/1e9, r.Backend, test, r.AvgTS, r.StddevTS)
			}
			tw.Flush()
			experts, perToken := m.ExpertBytes()
			fmt.Fprintf(os.Stdout, "adapter: %s (%s, %s); decode reads %s of weights per token: %.1f GB/s at the tg rate\n",
				ctx.Adapter.Name, ctx.Adapter.Impl, ctx.Adapter.Backend, bytesHuman(perToken), float64(perToken)*lastTG(results)/1e9)
			if experts > 0 {
				fmt.Fprintf(os.Stdout, "experts: %s of the weights, %d of %d per token: %s dense + %s experts read per token\n",
					bytesHuman(experts), m.Cfg.ExpertsUsed, m.Cfg.Experts, bytesHuman(w-experts), bytesHuman(perToken-(w-experts)))
			}
			fmt.Fprintf(os.Stdout, "GPU memory: weights %s (experts %s), KV cache %s (%s, %d bytes per token), scratch %s\n",
				bytesHuman(w), bytesHuman(experts), bytesHuman(kvb), kt, m.KV.Config().TokenBytes(), bytesHuman(s))
			for _, p := range profiles {
				p.print(os.Stdout)
			}
			return nil
		},
	}
	cmd.Flags().StringP("model", "m", "", "GGUF model file")
	cmd.Flags().String("shape", "", "synthesise a random-weight model of this shape instead of loading one")
	cmd.Flags().String("type", "q4_0", "weight type with --shape (f32, f16, q8_0, q4_0, q4_k, q4_k_m, ...)")
	cmd.Flags().IntP("n-prompt", "p", 512, "prompt tokens processed in one batch (0: skip)")
	cmd.Flags().IntP("n-gen", "n", 128, "tokens generated one at a time (0: skip)")
	cmd.Flags().IntP("repetitions", "r", 3, "repetitions of each test")
	cmd.Flags().Bool("json", false, "print a JSON array with llama-bench's field names")
	cmd.Flags().String("parallel", "", "comma-separated sequence counts (1,4,16,64): prefill N prompts of -p tokens, then -n decode steps of all N at once, like llama-batched-bench")
	cmd.Flags().String("write", "", "with --shape: write the random-weight model to this GGUF file instead of benchmarking (for the peers)")
	cmd.Flags().String("vocab", "", "with --write: copy the tokenizer of this GGUF, padded to the shape's vocabulary")
	cmd.Flags().IntP("depth", "d", 0, "tokens already in the context before each test (llama-bench -d): decode and prefill at that depth")
	cmd.Flags().Bool("profile", false, "also print GPU time per op per token from timestamp queries (when the adapter has them)")
	return cmd
}

// benchModel is the model a benchmark runs: random weights of --shape and
// --type, else -m's file. closeModel frees it (and the file).
func (a *app) benchModel(cmd *cobra.Command, ctx *gpu.Context, opt model.Options) (m *model.Model, label string, closeModel func(), err error) {
	opt.QuantMatMul = a.cfg.GetBool("engine.quant_matmul")
	f := cmd.Flags()
	shape, _ := f.GetString("shape")
	typName, _ := f.GetString("type")
	if shape != "" {
		cfg, ok := model.Shapes[shape]
		if !ok {
			return nil, "", nil, fmt.Errorf("unknown shape %q: %s", shape, strings.Join(model.ShapeNames(), ", "))
		}
		typ, err := model.ParseWeightType(typName)
		if err != nil {
			return nil, "", nil, err
		}
		if m, err = model.Synthesize(ctx, cfg, typ, opt, 1); err != nil {
			return nil, "", nil, err
		}
		return m, shape + " " + strings.ToUpper(typName) + " (random)", m.Close, nil
	}
	path, err := a.modelPath(cmd)
	if err != nil {
		return nil, "", nil, err
	}
	gf, err := gguf.Open(path)
	if err != nil {
		return nil, "", nil, err
	}
	if m, err = model.Load(ctx, gf, opt); err != nil {
		gf.Close()
		return nil, "", nil, err
	}
	return m, filepath.Base(path), func() { m.Close(); gf.Close() }, nil
}

func params(m *model.Model) uint64 {
	n := uint64(0)
	for _, t := range m.Tensors() {
		n += uint64(t.Len())
	}
	return n
}

func meanStd(xs []float64) (mean, std float64) {
	for _, x := range xs {
		mean += x
	}
	mean /= float64(len(xs))
	if len(xs) > 1 {
		for _, x := range xs {
			std += (x - mean) * (x - mean)
		}
		std = math.Sqrt(std / float64(len(xs)-1))
	}
	return mean, std
}

func lastTG(rs []benchResult) float64 {
	for _, r := range rs {
		if r.NGen > 0 {
			return r.AvgTS
		}
	}
	return 0
}

// depthChunk is the most tokens one prefill step takes while --depth fills
// the context.
const depthChunk = 512

// fillDepth prefills seq with depth random tokens in chunks.
func fillDepth(m *model.Model, seq, depth int, rng *rand.Rand) error {
	chunk := make([]int32, min(depth, depthChunk))
	for done := 0; done < depth; done += len(chunk) {
		chunk = chunk[:min(len(chunk), depth-done)]
		for i := range chunk {
			chunk[i] = int32(rng.Intn(m.Cfg.Vocab))
		}
		if _, err := m.Forward(seq, chunk, model.NextGreedy, nil); err != nil {
			return fmt.Errorf("bench: filling the context to depth %d: %w", depth, err)
		}
	}
	return nil
}

// testName is llama-bench's: pp512, tg128, "tg128 @ d4096".
func testName(nPrompt, nGen, depth int) string {
	t := fmt.Sprintf("pp%d", nPrompt)
	if nGen > 0 {
		t = fmt.Sprintf("tg%d", nGen)
	}
	if depth > 0 {
		t += fmt.Sprintf(" @ d%d", depth)
	}
	return t
}
