package serve

import (
	"bytes"
	"encoding/json"
	"errors"
	"sync"

	"github.com/wgllm/wgllm/runtime/grammar"
)

// Structured output: OpenAI's response_format and Ollama's format become a
// grammar that constrains the job's sampling (runtime/grammar).

// responseFormat is OpenAI's response_format.
type responseFormat struct {
	Type       string `json:"type"` // text, json_object, json_schema
	JSONSchema *struct {
		Name   string          `json:"name"`
		Schema json.RawMessage `json:"schema"`
		Strict *bool           `json:"strict"`
	} `json:"json_schema"`
}

// responseFormatGrammar compiles response_format; nil for text (or none).
func responseFormatGrammar(raw json.RawMessage) (*grammar.Grammar, *apiError) {
	if isNull(raw) {
		return nil, nil
	}
	var rf responseFormat
	if err := json.Unmarshal(raw, &rf); err != nil {
		return nil, invalidParam("response_format", "response_format must be an object with a type: %v", err)
	}
	switch rf.Type {
	case "text":
		return nil, nil
	case "json_object":
		return grammar.JSON(), nil
	case "json_schema":
		if rf.JSONSchema == nil {
			return nil, invalidParam("response_format.json_schema", "response_format.json_schema is required with type json_schema")
		}
		if isNull(rf.JSONSchema.Schema) {
			return nil, invalidParam("response_format.json_schema.schema", "response_format.json_schema.schema is required")
		}
		return compileSchema("response_format.json_schema.schema", rf.JSONSchema.Schema)
	}
	return nil, invalidParam("response_format.type", "response_format.type %q: want text, json_object or json_schema", rf.Type)
}

// ollamaFormatGrammar compiles Ollama's format: "json", or a JSON schema.
func ollamaFormatGrammar(raw json.RawMessage) (*grammar.Grammar, *apiError) {
	f := bytes.TrimSpace(raw)
	switch {
	case isNull(f) || bytes.Equal(f, []byte(`""`)):
		return nil, nil
	case bytes.Equal(f, []byte(`"json"`)):
		return grammar.JSON(), nil
	case f[0] == '{':
		return compileSchema("format", f)
	}
	return nil, invalidParam("format", `format must be "json" or a JSON schema object`)
}

// schemaCache keeps compiled schemas by their text: clients (LangChain's
// withStructuredOutput) send the same schema with every request.
var schemaCache = struct {
	sync.Mutex
	m map[string]*grammar.Grammar
}{m: map[string]*grammar.Grammar{}}

const maxCachedSchemas = 32 // each keeps up to 8 MiB of masks

// compileSchema compiles a JSON schema; a schema that cannot be compiled
// is a 400 naming param and the part of the schema at fault.
func compileSchema(param string, schema json.RawMessage) (*grammar.Grammar, *apiError) {
	key := compactJSON(schema)
	schemaCache.Lock()
	g := schemaCache.m[key]
	schemaCache.Unlock()
	if g != nil {
		return g, nil
	}
	g, err := grammar.FromJSONSchema(schema)
	if err != nil {
		var se *grammar.SchemaError
		if errors.As(err, &se) {
			where := ""
			if se.Path != "" {
				where = " at " + se.Path
			}
			return nil, invalidParam(param, "%s%s: %s", param, where, se.Msg)
		}
		return nil, invalidParam(param, "%s: %v", param, err)
	}
	schemaCache.Lock()
	if len(schemaCache.m) >= maxCachedSchemas {
		clear(schemaCache.m)
	}
	schemaCache.m[key] = g
	schemaCache.Unlock()
	return g, nil
}
