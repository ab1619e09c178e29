package api

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"sort"
	"strings"

	goyaml "go.yaml.in/yaml/v2"
	"sigs.k8s.io/yaml"
)

// DecodeError is a document that could not be decoded. Doc counts the
// documents of the input from 1 (YAML "---" separated; for JSON, the
// objects of a stream or the elements of a top-level array); Line is the
// input line the document starts on (YAML only, else 0).
type DecodeError struct {
	Doc, Line int
	Err       error
}

func (e *DecodeError) Error() string { return fmt.Sprintf("document %d: %v", e.Doc, e.Err) }

func (e *DecodeError) Unwrap() error { return e.Err }

// UnknownFieldError is a field the kind does not have, named by its path
// in the document ("spec.ipipmode", "items[1].metadata.nme"). Its text is
// calicoctl's.
type UnknownFieldError struct{ Field string }

func (e *UnknownFieldError) Error() string {
	return "field in document is not recognized or is in the wrong location: " + e.Field
}

// Decode reads resources from r: YAML (one or more documents separated by
// "---" lines) or JSON (an object, a stream of objects or an array). A
// document is one resource or a list (kind "<Kind>List" or "List") with
// "items"; list items may omit apiVersion and kind, which they inherit
// from a <Kind>List. Decoding is strict: an unknown field, a missing
// apiVersion or kind, an unknown kind or an apiVersion other than
// podnet.io/v1 (or projectcalico.org/v3 for the kinds Calico shares) is a
// *DecodeError. An unknown field or kind that Calico has is an
// *UnsupportedError instead, saying podnet does not support it. Empty
// documents are skipped. Decoded resources keep the apiVersion they were
// written with; defaults are not applied (see SetDefaults).
func Decode(r io.Reader) ([]Resource, error) {
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("read resources: %w", err)
	}
	trimmed := bytes.TrimLeft(data, " \t\r\n\ufeff")
	if len(trimmed) > 0 && (trimmed[0] == '{' || trimmed[0] == '[') {
		if out, err := decodeJSON(trimmed); err == nil || !errors.Is(err, errNotJSON) {
			return out, err
		}
		// Not JSON after all: a YAML flow mapping. Fall through.
	}
	var out []Resource
	for i, d := range splitYAML(data) {
		j, err := yaml.YAMLToJSONStrict(d.text)
		if err == nil {
			err = onlyOneValue(d.text)
		}
		if err != nil {
			return nil, &DecodeError{Doc: i + 1, Line: d.line, Err: fmt.Errorf("malformed YAML (document starts at line %d): %v", d.line, strings.TrimPrefix(err.Error(), "error converting YAML to JSON: "))}
		}
		rs, err := decodeDocument(j)
		if err != nil {
			return nil, &DecodeError{Doc: i + 1, Line: d.line, Err: err}
		}
		out = append(out, rs...)
	}
	return out, nil
}

// onlyOneValue checks that a YAML document holds one value: the YAML to
// JSON conversion reads the first and ignores what follows (a second
// JSON object after a comma, a document after a "..." line), which would
// make a file apply only in part.
func onlyOneValue(doc []byte) error {
	dec := goyaml.NewDecoder(bytes.NewReader(doc))
	var v any
	if err := dec.Decode(&v); err != nil {
		return err
	}
	if err := dec.Decode(&v); err != io.EOF {
		return fmt.Errorf("more follows the document's first value (%v); separate documents with a line of ---", err)
	}
	return nil
}

var errNotJSON = errors.New("not JSON")

func decodeJSON(data []byte) ([]Resource, error) {
	if !json.Valid(data) {
		// A stream of several objects is not Valid as a whole; check
		// that each one is. Input that fails at its first value may be
		// a YAML flow mapping; one that fails after a good value is
		// broken JSON, never a first object alone.
		dec := json.NewDecoder(bytes.NewReader(data))
		for n := 0; ; n++ {
			var raw json.RawMessage
			if err := dec.Decode(&raw); err == io.EOF {
				break
			} else if err != nil && n == 0 {
				return nil, fmt.Errorf("%w: %v", errNotJSON, err)
			} else if err != nil {
				return nil, &DecodeError{Doc: n + 1, Err: fmt.Errorf("malformed JSON: %v", err)}
			}
		}
	}
	var docs []json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(data))
	for {
		var raw json.RawMessage
		if err := dec.Decode(&raw); err == io.EOF {
			break
		} else if err != nil {
			return nil, &DecodeError{Doc: len(docs) + 1, Err: fmt.Errorf("malformed JSON: %v", err)}
		}
		if bytes.HasPrefix(bytes.TrimSpace(raw), []byte("[")) {
			var elems []json.RawMessage
			if err := json.Unmarshal(raw, &elems); err != nil {
				return nil, &DecodeError{Doc: len(docs) + 1, Err: fmt.Errorf("malformed JSON: %v", err)}
			}
			docs = append(docs, elems...)
			continue
		}
		docs = append(docs, raw)
	}
	var out []Resource
	for i, d := range docs {
		rs, err := decodeDocument(d)
		if err != nil {
			return nil, &DecodeError{Doc: i + 1, Err: err}
		}
		out = append(out, rs...)
	}
	return out, nil
}

type yamlDoc struct {
	text []byte
	line int // 1-based line of the document's first line
}

// splitYAML splits on "---" lines, dropping documents that hold only
// blanks and comments.
func splitYAML(data []byte) []yamlDoc {
	var docs []yamlDoc
	var cur bytes.Buffer
	start, n := 1, 0
	flush := func(next int) {
		if hasContent(cur.Bytes()) {
			docs = append(docs, yamlDoc{text: bytes.Clone(cur.Bytes()), line: start})
		}
		cur.Reset()
		start = next
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64*1024), len(data)+1)
	for sc.Scan() {
		n++
		line := sc.Text()
		if line == "---" || strings.HasPrefix(line, "--- ") || strings.HasPrefix(line, "---\t") || strings.HasPrefix(line, "---#") {
			flush(n + 1)
			rest := strings.TrimSpace(strings.TrimPrefix(line, "---"))
			if rest != "" && !strings.HasPrefix(rest, "#") {
				// "--- {a: b}": content on the marker line.
				cur.WriteString(rest)
				cur.WriteByte('\n')
				start = n
			}
			continue
		}
		cur.WriteString(line)
		cur.WriteByte('\n')
	}
	flush(n + 1)
	return docs
}

func hasContent(b []byte) bool {
	for _, l := range bytes.Split(b, []byte("\n")) {
		l = bytes.TrimSpace(l)
		if len(l) > 0 && l[0] != '#' && !bytes.Equal(l, []byte("...")) {
			return true
		}
	}
	return false
}

// decodeDocument decodes one JSON document: a resource or a list.
func decodeDocument(j []byte) ([]Resource, error) {
	dec := json.NewDecoder(bytes.NewReader(j))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("malformed JSON: %v", err)
	}
	if v == nil {
		return nil, nil // an empty document
	}
	obj, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("a document must be an object with apiVersion and kind, not %s", jsonType(v))
	}
	return decodeObject(obj, "", "", "")
}

func decodeObject(obj map[string]any, path, inheritAPI, inheritKind string) ([]Resource, error) {
	apiVersion, err := stringField(obj, "apiVersion", path, inheritAPI)
	if err != nil {
		return nil, err
	}
	kind, err := stringField(obj, "kind", path, inheritKind)
	if err != nil {
		return nil, err
	}
	if kind == "" {
		return nil, fmt.Errorf("%skind: missing", path)
	}
	if kind == "List" || strings.HasSuffix(kind, "List") {
		itemKind := ""
		if kind != "List" {
			k, ok := kindByName(strings.TrimSuffix(kind, "List"))
			if !ok {
				return nil, unknownKind(kind)
			}
			itemKind = k.Kind
			if err := checkAPIVersion(k, apiVersion, path); err != nil {
				return nil, err
			}
		} else if apiVersion == "" {
			return nil, fmt.Errorf("%sapiVersion: missing", path)
		}
		if path != "" {
			return nil, fmt.Errorf("%s: a list cannot be an item of a list", strings.TrimSuffix(path, "."))
		}
		for k := range obj {
			if k != "apiVersion" && k != "kind" && k != "items" && k != "metadata" {
				return nil, &UnknownFieldError{Field: k}
			}
		}
		if m, ok := obj["metadata"]; ok {
			if _, err := walk(m, reflect.TypeOf(ListMeta{}), "metadata"); err != nil {
				return nil, err
			}
		}
		items, ok := obj["items"].([]any)
		if !ok && obj["items"] != nil {
			return nil, fmt.Errorf("items: want a list, got %s", jsonType(obj["items"]))
		}
		var out []Resource
		for i, it := range items {
			ip := fmt.Sprintf("items[%d].", i)
			m, ok := it.(map[string]any)
			if !ok {
				return nil, fmt.Errorf("%s: want an object, got %s", strings.TrimSuffix(ip, "."), jsonType(it))
			}
			ia := ""
			if itemKind != "" {
				ia = apiVersion
			}
			rs, err := decodeObject(m, ip, ia, itemKind)
			if err != nil {
				return nil, err
			}
			out = append(out, rs...)
		}
		return out, nil
	}
	k, ok := kindByName(kind)
	if !ok {
		return nil, unknownKind(kind)
	}
	if err := checkAPIVersion(k, apiVersion, path); err != nil {
		return nil, err
	}
	r := k.New()
	norm, err := walk(obj, reflect.TypeOf(r).Elem(), strings.TrimSuffix(path, "."))
	if ue := (*UnknownFieldError)(nil); errors.As(err, &ue) {
		if u := unsupportedField(k.Kind, strings.TrimPrefix(ue.Field, path), ue.Field); u != nil {
			return nil, u
		}
	}
	if err != nil {
		return nil, err
	}
	b, err := json.Marshal(norm)
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(b, r); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return nil, fmt.Errorf("%s%s: cannot use a JSON %s as %s", path, te.Field, te.Value, goTypeName(te.Type))
		}
		return nil, fmt.Errorf("%s%v", path, err)
	}
	// The apiVersion is kept, so that what was written as Calico's is
	// read back (get -o yaml) as Calico's.
	*r.GetTypeMeta() = TypeMeta{APIVersion: apiVersion, Kind: k.Kind}
	return []Resource{r}, nil
}

func unknownKind(kind string) error {
	if err := unsupportedKind(kind); err != nil {
		return err
	}
	return fmt.Errorf("unknown kind %q", kind)
}

func goTypeName(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Int, reflect.Int64, reflect.Int32, reflect.Uint32, reflect.Uint64:
		return "an integer"
	case reflect.Bool:
		return "a boolean (true or false)"
	case reflect.String:
		return "a string"
	case reflect.Slice:
		return "a list"
	case reflect.Map, reflect.Struct:
		return "an object"
	}
	return t.String()
}

func stringField(obj map[string]any, key, path, inherit string) (string, error) {
	v, ok := obj[key]
	if !ok || v == nil {
		return inherit, nil
	}
	s, ok := v.(string)
	if !ok {
		return "", fmt.Errorf("%s%s: want a string, got %s", path, key, jsonType(v))
	}
	return s, nil
}

func checkAPIVersion(k KindInfo, apiVersion, path string) error {
	switch {
	case apiVersion == "":
		return fmt.Errorf("%sapiVersion: missing (want %s)", path, APIVersion)
	case apiVersion == APIVersion:
		return nil
	case apiVersion == CalicoAPIVersion && k.Calico:
		return nil
	case k.Calico:
		return fmt.Errorf("%sapiVersion %q is not supported for kind %s (want %s or %s)", path, apiVersion, k.Kind, APIVersion, CalicoAPIVersion)
	}
	return fmt.Errorf("%sapiVersion %q is not supported for kind %s (want %s)", path, apiVersion, k.Kind, APIVersion)
}

func jsonType(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case bool:
		return "boolean"
	case json.Number, float64:
		return "number"
	case string:
		return "string"
	case []any:
		return "list"
	case map[string]any:
		return "object"
	}
	return fmt.Sprintf("%T", v)
}

var unmarshalerType = reflect.TypeOf((*json.Unmarshaler)(nil)).Elem()

// walk checks v, a generic JSON value, against Go type t: every object
// key must be a JSON field name of t, exactly (encoding/json would match
// case-insensitively), and a string field must hold a string (YAML
// reads unquoted numbers and booleans as such). It returns v, checked.
func walk(v any, t reflect.Type, path string) (any, error) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if reflect.PointerTo(t).Implements(unmarshalerType) {
		// Its own parser (AS numbers, durations, times) checks it here,
		// where the field's path is known; encoding/json's error would
		// not name it.
		b, err := json.Marshal(v)
		if err == nil {
			err = reflect.New(t).Interface().(json.Unmarshaler).UnmarshalJSON(b)
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %v", path, err)
		}
		return v, nil
	}
	switch t.Kind() {
	case reflect.String:
		// YAML 1.1 reads unquoted 0700 as 448, 1e3 as 1000, yes as true:
		// what the user meant is gone by now, so a number or boolean
		// where a string belongs is refused, as calicoctl refuses it,
		// rather than stored as something else.
		switch x := v.(type) {
		case json.Number:
			return nil, fmt.Errorf("%s: want a string, got the number %s (as YAML reads it); quote the value", path, x)
		case bool:
			return nil, fmt.Errorf("%s: want a string, got the boolean %v (YAML reads yes, no, on, off so); quote the value", path, x)
		}
	case reflect.Struct:
		m, ok := v.(map[string]any)
		if !ok {
			return v, nil // json.Unmarshal reports the type mismatch
		}
		fields := jsonFields(t)
		out := make(map[string]any, len(m))
		for _, k := range sortedAnyKeys(m) {
			ft, ok := fields[k]
			if !ok {
				return nil, &UnknownFieldError{Field: joinPath(path, k)}
			}
			nv, err := walk(m[k], ft, joinPath(path, k))
			if err != nil {
				return nil, err
			}
			out[k] = nv
		}
		return out, nil
	case reflect.Slice:
		a, ok := v.([]any)
		if !ok {
			return v, nil
		}
		out := make([]any, len(a))
		for i, e := range a {
			nv, err := walk(e, t.Elem(), fmt.Sprintf("%s[%d]", path, i))
			if err != nil {
				return nil, err
			}
			out[i] = nv
		}
		return out, nil
	case reflect.Map:
		m, ok := v.(map[string]any)
		if !ok {
			return v, nil
		}
		out := make(map[string]any, len(m))
		for k, e := range m {
			if err := mapString(e, t.Elem(), joinPath(path, k)); err != nil {
				return nil, err
			}
			nv, err := walk(e, t.Elem(), joinPath(path, k))
			if err != nil {
				return nil, err
			}
			out[k] = nv
		}
		return out, nil
	}
	return v, nil
}

// mapString refuses a boolean or number where a map (labels,
// annotations) holds strings, as calicoctl does: YAML reads `x: true`
// (or yes, on) as a boolean, and storing it as "true" without a word
// would hide that the value was not quoted.
func mapString(v any, t reflect.Type, path string) error {
	if t.Kind() != reflect.String {
		return nil
	}
	switch x := v.(type) {
	case bool:
		return fmt.Errorf("%s: label and annotation values are strings, got the boolean %v; quote it: '%v'", path, x, x)
	case json.Number:
		return fmt.Errorf("%s: label and annotation values are strings, got the number %s; quote it: '%s'", path, x, x)
	}
	return nil
}

func joinPath(path, k string) string {
	if path == "" {
		return k
	}
	return path + "." + k
}

func sortedAnyKeys(m map[string]any) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// jsonFields maps the JSON names of struct type t to their types,
// flattening embedded untagged structs as encoding/json does.
func jsonFields(t reflect.Type) map[string]reflect.Type {
	out := map[string]reflect.Type{}
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		if f.Anonymous && name == "" && f.Type.Kind() == reflect.Struct {
			for k, v := range jsonFields(f.Type) {
				out[k] = v
			}
			continue
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		out[name] = f.Type
	}
	return out
}

// Output formats of Encode.
const (
	FormatYAML = "yaml"
	FormatJSON = "json"
)

// Encode writes resources as YAML or JSON, with keys sorted
// alphabetically (calicoctl marshals through JSON, docs/calico-conventions.md §1.5), each
// with the apiVersion it was written with (OutputAPIVersion). One
// resource is written as itself; several (or none) as a list:
// "<Kind>List" when they share a kind, else "List".
func Encode(w io.Writer, rs []Resource, format string) error {
	if len(rs) == 1 {
		v, err := toGeneric(rs[0])
		if err != nil {
			return err
		}
		return write(w, v, format)
	}
	kind := ""
	for i, r := range rs {
		if i == 0 {
			kind = r.ResourceKind()
		} else if r.ResourceKind() != kind {
			kind = ""
		}
	}
	return EncodeList(w, kind, rs, ListMeta{}, format)
}

// EncodeList writes resources as a list, "<kind>List" (or "List" when
// kind is ""), with meta as the list's metadata, whatever their number.
// The list has the apiVersion its items share, else podnet.io/v1.
func EncodeList(w io.Writer, kind string, rs []Resource, meta ListMeta, format string) error {
	items := make([]any, 0, len(rs))
	listAPI := ""
	for i, r := range rs {
		v, err := toGeneric(r)
		if err != nil {
			return err
		}
		items = append(items, v)
		if a := v["apiVersion"].(string); i == 0 {
			listAPI = a
		} else if a != listAPI {
			listAPI = APIVersion
		}
	}
	if listAPI == "" {
		listAPI = APIVersion
	}
	listKind := "List"
	if kind != "" {
		k, ok := kindByName(kind)
		if !ok {
			return fmt.Errorf("unknown kind %q", kind)
		}
		listKind = k.ListKind
	}
	list := map[string]any{"apiVersion": listAPI, "kind": listKind, "items": items, "metadata": map[string]any{}}
	if meta.ResourceVersion != "" {
		list["metadata"] = map[string]any{"resourceVersion": meta.ResourceVersion}
	}
	return write(w, list, format)
}

// toGeneric marshals r to a generic JSON value with its apiVersion and
// canonical kind, so that maps, hence keys, come out sorted.
func toGeneric(r Resource) (map[string]any, error) {
	b, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", Key(r), err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		return nil, err
	}
	m["apiVersion"], m["kind"] = OutputAPIVersion(r.ResourceKind(), r.GetTypeMeta().APIVersion), r.ResourceKind()
	return m, nil
}

func write(w io.Writer, v any, format string) error {
	j, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	switch format {
	case FormatJSON:
		j = append(j, '\n')
		_, err = w.Write(j)
		return err
	case FormatYAML:
		y, err := yaml.JSONToYAML(j)
		if err != nil {
			return err
		}
		_, err = w.Write(y)
		return err
	}
	return fmt.Errorf("unknown output format %q (want yaml or json)", format)
}
