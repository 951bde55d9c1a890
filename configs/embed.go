// Package configs embeds default.yaml, the base layer of the configuration.
package configs

import _ "embed"

// Default is the text of default.yaml.
//
//go:embed default.yaml
var Default []byte
