package serve

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strings"

	"github.com/wgllm/wgllm/runtime/engine"
)

// A model's own defaults (a created model's system prompt and Ollama
// parameters, see ModelInfo): applied to a generation once its model is
// known, under what the request itself sets.

// ollamaSamplingOptions are the Ollama options ollamaOptions maps onto
// sampling fields; with ollamaIgnoredOptions, the parameters a created
// model may carry.
var ollamaSamplingOptions = map[string]bool{
	"temperature": true, "top_p": true, "min_p": true, "repeat_penalty": true, "presence_penalty": true,
	"frequency_penalty": true, "top_k": true, "seed": true, "num_predict": true, "repeat_last_n": true,
	"stop": true, "typical_p": true, "tfs_z": true, "mirostat": true,
}

// modelDefaults validates a model's parameters (Ollama's names) into
// sampling fields; an error names the field as "parameters.NAME".
func (s *Server) modelDefaults(r *http.Request, params map[string]json.RawMessage) (samplingFields, *apiError) {
	rename := func(ae *apiError, key string) *apiError {
		ae.Param = "parameters." + strings.TrimPrefix(ae.Param, "options.")
		if key != "" {
			ae.Param = "parameters." + key
		}
		ae.Message = strings.ReplaceAll(ae.Message, "options.", "parameters.")
		if !strings.Contains(ae.Message, ae.Param) {
			ae.Message = ae.Param + ": " + ae.Message
		}
		return ae
	}
	for key := range params {
		if !ollamaSamplingOptions[key] && !ollamaIgnoredOptions[key] {
			return samplingFields{}, invalidParam("parameters."+key, "parameters.%s: not an Ollama parameter", key)
		}
	}
	fields, aerr := s.ollamaOptions(r, params)
	if aerr != nil {
		return fields, rename(aerr, "")
	}
	if _, aerr := s.samplingJob(&fields); aerr != nil {
		key := aerr.Param
		if key == "max_tokens" {
			key = "num_predict"
		}
		return fields, rename(aerr, key)
	}
	return fields, nil
}

// overlay is defs with every field req sets replaced by req's.
func overlay(defs, req samplingFields) samplingFields {
	out := defs
	set := func(dst **float64, v *float64) {
		if v != nil {
			*dst = v
		}
	}
	set(&out.Temperature, req.Temperature)
	set(&out.TopP, req.TopP)
	set(&out.MinP, req.MinP)
	set(&out.PresencePenalty, req.PresencePenalty)
	set(&out.FrequencyPenalty, req.FrequencyPenalty)
	set(&out.RepeatPenalty, req.RepeatPenalty)
	if req.TopK != nil {
		out.TopK = req.TopK
	}
	if req.RepeatLastN != nil {
		out.RepeatLastN = req.RepeatLastN
	}
	if req.Seed != nil {
		out.Seed = req.Seed
	}
	if req.MaxTokens != nil || req.MaxCompletionTokens != nil {
		out.MaxTokens, out.MaxCompletionTokens = req.MaxTokens, req.MaxCompletionTokens
	}
	if len(req.Stop) > 0 {
		out.Stop = req.Stop
	}
	return out
}

// withModelDefaults is g with b's model defaults under it: the model's
// system prompt first in a chat that has none, and its parameters where
// the request leaves a setting out. g itself is not changed.
func (s *Server) withModelDefaults(r *http.Request, b Backend, g *generation) (*generation, *apiError) {
	d, ok := b.(Describer)
	if !ok {
		return g, nil
	}
	info := d.Describe()
	if info.System == "" && len(info.Parameters) == 0 {
		return g, nil
	}
	out := *g
	if info.System != "" && g.kind == kindChat && (len(g.messages) == 0 || g.messages[0].Role != "system") {
		out.messages = append([]engine.ChatMessage{{Role: "system", Content: info.System}}, g.messages...)
	}
	if len(info.Parameters) == 0 {
		return &out, nil
	}
	defs, aerr := s.modelDefaults(r, info.Parameters)
	if aerr != nil {
		return nil, &apiError{Status: http.StatusInternalServerError, Type: "server_error", Code: "bad_model_parameters",
			Message: fmt.Sprintf("model %s: its stored %s", info.Name, aerr.Message)}
	}
	merged := overlay(defs, g.fields)
	job, aerr := s.samplingJob(&merged)
	if aerr != nil {
		return nil, aerr
	}
	seed := g.settings.Sampling.Seed // the request's, or random; n > 1 choices count up from it
	out.settings.Sampling = job.Sampling
	if g.fields.Seed == nil && defs.Seed != nil {
		seed = job.Sampling.Seed + uint64(g.choice)
	}
	out.settings.Sampling.Seed = seed
	out.settings.MaxTokens = job.MaxTokens
	out.settings.Stop = job.Stop
	return &out, nil
}

// ollamaParameterLines lists parameters as `ollama show` does: one
// "name value" line each (a line per stop string), sorted by name.
func ollamaParameterLines(params map[string]json.RawMessage) []string {
	keys := make([]string, 0, len(params))
	for k := range params {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var lines []string
	for _, k := range keys {
		var many []json.RawMessage
		if json.Unmarshal(params[k], &many) != nil {
			many = []json.RawMessage{params[k]}
		}
		for _, v := range many {
			lines = append(lines, fmt.Sprintf("%-30s %s", k, compactJSON(v)))
		}
	}
	return lines
}
