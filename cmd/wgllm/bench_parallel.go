package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math/rand"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/wgllm/wgllm/ops"
	"github.com/wgllm/wgllm/runtime/gpu"
	"github.com/wgllm/wgllm/runtime/model"
)

// maxParallel bounds one --parallel entry: each sequence gets a KV slot.
const maxParallel = 4096

// parallelResult is one row of bench --parallel, with the field names of
// llama-batched-bench's JSON lines.
type parallelResult struct {
	Model   string  `json:"model_type"`
	Adapter string  `json:"gpu_info"`
	PP      int     `json:"pp"`
	TG      int     `json:"tg"`
	PL      int     `json:"pl"`   // sequences (B)
	NKV     int     `json:"n_kv"` // KV cells used: PL·(PP+TG)
	TPP     float64 `json:"t_pp"` // seconds
	SpeedPP float64 `json:"speed_pp"`
	TTG     float64 `json:"t_tg"`
	SpeedTG float64 `json:"speed_tg"`
	T       float64 `json:"t"`
	Speed   float64 `json:"speed"`
}

// parseParallel reads "1,4,16,64"; "" is no list.
func parseParallel(s string) ([]int, error) {
	if s == "" {
		return nil, nil
	}
	var ns []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 || n > maxParallel {
			return nil, fmt.Errorf("--parallel %q: want comma-separated sequence counts in [1, %d]", s, maxParallel)
		}
		ns = append(ns, n)
	}
	return ns, nil
}

// benchParallel measures, for each N in ns, prefill of N prompts of nP
// tokens (one Forward per sequence: a prefill batch holds one sequence)
// and nG decode steps advancing all N sequences at once with greedy
// tokens picked on the GPU, as llama-batched-bench does (without a
// shared prompt).
func (a *app) benchParallel(cmd *cobra.Command, ctx *gpu.Context, kt ops.DType, ns []int, nP, nG int, asJSON, profile bool) error {
	maxN := slices.Max(ns)
	// Each sequence holds whole blocks.
	const block = 16
	ctxLen := nP + nG + 1
	perSeq := (ctxLen + block - 1) / block * block
	opt := model.Options{CtxLen: ctxLen, Seqs: maxN, BlockSize: block, KVTokens: maxN * perSeq, KVType: kt, Batch: max(nP, maxN, 1),
		DecodeTiledRows: a.cfg.GetInt("engine.decode_tiled_rows")}
	t0 := time.Now()
	m, label, closeModel, err := a.benchModel(cmd, ctx, opt)
	if err != nil {
		return err
	}
	defer closeModel()
	w, kvb, s := m.Memory()
	a.log.Info().Str("model", label).Dur("load", time.Since(t0)).Uint64("weights_bytes", w).
		Uint64("kv_bytes", kvb).Uint64("scratch_bytes", s).Str("adapter", ctx.Adapter.Name).Msg("bench model ready")
	seqs := make([]int, maxN)
	for i := range seqs {
		if seqs[i], err = m.KV.Acquire(); err != nil {
			return err
		}
	}
	pb := &parallelBench{m: m, rng: rand.New(rand.NewSource(42)), next: make([]int32, maxN)}
	var results []parallelResult
	for _, n := range ns {
		// An untimed short run first builds this batch size's pipelines and
		// bind groups.
		if _, _, err := pb.run(seqs[:n], min(nP, 8), min(nG, 2)); err != nil {
			return err
		}
		tPP, tTG, err := pb.run(seqs[:n], nP, nG)
		if err != nil {
			return err
		}
		r := parallelResult{Model: label, Adapter: ctx.Adapter.Name, PP: nP, TG: nG, PL: n, NKV: n * (nP + nG),
			TPP: tPP.Seconds(), TTG: tTG.Seconds()}
		r.SpeedPP = rate(n*nP, r.TPP)
		r.SpeedTG = rate(n*nG, r.TTG)
		r.T = r.TPP + r.TTG
		r.Speed = rate(r.NKV, r.T)
		a.log.Info().Int("sequences", n).Float64("prefill_tps", r.SpeedPP).Float64("decode_tps", r.SpeedTG).Msg("parallel bench")
		results = append(results, r)
	}
	var profiles []opProfile
	if profile {
		// Where one decode step of the largest batch spends its GPU time.
		if profiles, err = pb.profile(ctx, seqs, nP, nG); err != nil {
			return err
		}
	}
	if asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(results)
	}
	printParallel(os.Stdout, label, ctx.Adapter, results)
	for _, p := range profiles {
		p.print(os.Stdout)
	}
	return nil
}

// profile times every dispatch of up to 16 decode steps of all seqs after
// a prefill of nP tokens each.
func (pb *parallelBench) profile(ctx *gpu.Context, seqs []int, nP, nG int) ([]opProfile, error) {
	steps := min(nG, 16)
	if steps == 0 {
		return nil, nil
	}
	if _, _, err := pb.run(seqs, nP, 0); err != nil {
		return nil, err
	}
	if err := ctx.EnableProfiling(); err != nil {
		return nil, err
	}
	ctx.ResetProfile()
	next := pb.next[:len(seqs)]
	start := time.Now()
	for range steps {
		if err := pb.m.DecodeBatch(seqs, next, model.NextGreedy, nil, next); err != nil {
			return nil, err
		}
	}
	wall := time.Since(start).Seconds() / float64(steps)
	ops, untimed := ctx.Profile()
	return []opProfile{{test: fmt.Sprintf("tg B=%d", len(seqs)), per: "step", units: steps, wall: wall, ops: ops, untimed: untimed}}, nil
}

func rate(tokens int, secs float64) float64 {
	if secs <= 0 {
		return 0
	}
	return float64(tokens) / secs
}

// parallelBench is the state bench --parallel reuses across batch sizes.
type parallelBench struct {
	m    *model.Model
	rng  *rand.Rand
	next []int32
}

// run empties the sequences, prefills each with nP random tokens, then
// decodes nG steps of all of them together; it returns the two times.
func (pb *parallelBench) run(seqs []int, nP, nG int) (prefill, decode time.Duration, err error) {
	m := pb.m
	for _, s := range seqs {
		if err := m.KV.Truncate(s, 0); err != nil {
			return 0, 0, err
		}
	}
	prompt := make([]int32, nP)
	next := pb.next[:len(seqs)]
	start := time.Now()
	for i, s := range seqs {
		for j := range prompt {
			prompt[j] = int32(pb.rng.Intn(m.Cfg.Vocab))
		}
		if nP == 0 {
			next[i] = int32(pb.rng.Intn(m.Cfg.Vocab))
			continue
		}
		if next[i], err = m.Forward(s, prompt, model.NextGreedy, nil); err != nil {
			return 0, 0, err
		}
	}
	prefill = time.Since(start)
	start = time.Now()
	for range nG {
		if err := m.DecodeBatch(seqs, next, model.NextGreedy, nil, next); err != nil {
			return 0, 0, err
		}
	}
	return prefill, time.Since(start), nil
}

// printParallel prints llama-batched-bench's table.
func printParallel(w io.Writer, label string, ad gpu.AdapterDesc, rs []parallelResult) {
	fmt.Fprintf(w, "model: %s; adapter: %s (%s)\n\n", label, ad.Name, ad.Backend)
	fmt.Fprintf(w, "|%6s | %6s | %4s | %6s | %8s | %8s | %8s | %8s | %8s | %8s |\n", "PP", "TG", "B", "N_KV", "T_PP s", "S_PP t/s", "T_TG s", "S_TG t/s", "T s", "S t/s")
	fmt.Fprintf(w, "|%6s-|-%6s-|-%4s-|-%6s-|-%8s-|-%8s-|-%8s-|-%8s-|-%8s-|-%8s-|\n", "------", "------", "----", "------", "--------", "--------", "--------", "--------", "--------", "--------")
	for _, r := range rs {
		fmt.Fprintf(w, "|%6d | %6d | %4d | %6d | %8.3f | %8.2f | %8.3f | %8.2f | %8.3f | %8.2f |\n",
			r.PP, r.TG, r.PL, r.NKV, r.TPP, r.SpeedPP, r.TTG, r.SpeedTG, r.T, r.Speed)
	}
}
