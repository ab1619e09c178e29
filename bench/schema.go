package bench

import _ "embed"

// Schema is the JSON Schema (draft 2020-12) of Report.
//
//go:embed schema.json
var Schema []byte
