package api

import (
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"sort"
	"strings"
	"unicode"

	"podnet/selector"
)

// FieldError is one invalid field: Field is the Go-style path Calico
// prints ("IPPool.Spec.CIDR"), Value the offending value, Reason why.
type FieldError struct {
	Field  string
	Value  any
	Reason string
}

func (f FieldError) String() string {
	if f.Reason == "" {
		return fmt.Sprintf("%s = '%v'", f.Field, f.Value)
	}
	return fmt.Sprintf("%s = '%v' (%s)", f.Field, f.Value, f.Reason)
}

// ValidationError lists every invalid field of one resource. Its text is
// calicoctl's (libcalico-go errors.ErrorValidation):
//
//	error with field IPPool.Spec.CIDR = '10.0.0.1/16' (IPPool CIDR is not strictly masked)
//
// or, for several fields,
//
//	error with the following fields:
//	-  IPPool.Spec.CIDR = '...' (...)
//	-  IPPool.Spec.BlockSize = '...' (...)
type ValidationError struct {
	Fields []FieldError
}

// HasField says whether one of the errors is about field (its path as
// FieldError.Field gives it, e.g. "Metadata.Name").
func (e *ValidationError) HasField(field string) bool {
	for _, f := range e.Fields {
		if f.Field == field {
			return true
		}
	}
	return false
}

func (e *ValidationError) Error() string {
	switch len(e.Fields) {
	case 0:
		return "unknown validation error"
	case 1:
		return "error with field " + e.Fields[0].String()
	}
	var b strings.Builder
	b.WriteString("error with the following fields:")
	for _, f := range e.Fields {
		b.WriteString("\n-  ")
		b.WriteString(f.String())
	}
	return b.String()
}

// fieldErrors accumulates FieldErrors.
type fieldErrors []FieldError

func (fe *fieldErrors) add(field string, value any, reason string) {
	*fe = append(*fe, FieldError{Field: field, Value: value, Reason: reason})
}

// err returns nil or a *ValidationError.
func (fe fieldErrors) err() error {
	if len(fe) == 0 {
		return nil
	}
	return &ValidationError{Fields: fe}
}

// dnsSubdomain is RFC 1123's subdomain, as Kubernetes checks names.
var dnsSubdomain = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)

const nameReason = "name must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"

// validateMeta checks metadata.name (a DNS subdomain, ≤ 253 bytes), label
// keys and values.
func validateMeta(fe *fieldErrors, m *ObjectMeta) {
	switch {
	case m.Name == "":
		fe.add("Metadata.Name", "", "metadata.name: required")
	case len(m.Name) > 253 || !dnsSubdomain.MatchString(m.Name):
		fe.add("Metadata.Name", m.Name, nameReason)
	}
	for _, k := range sortedKeys(m.Labels) {
		v := m.Labels[k]
		if !validLabelKey(k) {
			fe.add("Metadata.Labels", k, "invalid label key: want [prefix/]name, name ≤ 63 characters of [A-Za-z0-9_.-] starting and ending alphanumeric")
		}
		if v != "" && (len(v) > 63 || !labelName.MatchString(v)) {
			fe.add("Metadata.Labels["+k+"]", v, "invalid label value: ≤ 63 characters of [A-Za-z0-9_.-] starting and ending alphanumeric")
		}
	}
	for _, k := range sortedKeys(m.Annotations) {
		if !validLabelKey(k) {
			fe.add("Metadata.Annotations", k, "invalid annotation key")
		}
		if !printable(m.Annotations[k]) {
			fe.add("Metadata.Annotations["+k+"]", m.Annotations[k], notPrintable)
		}
	}
	if !printable(m.UID) {
		fe.add("Metadata.UID", m.UID, notPrintable)
	}
	if !printable(m.ResourceVersion) {
		fe.add("Metadata.ResourceVersion", m.ResourceVersion, notPrintable)
	}
}

const notPrintable = "control characters are not allowed (they cannot be shown or written as YAML)"

// printable reports whether s holds only what YAML can carry in a
// string: no control characters but tab, line feed and carriage return,
// and neither U+FFFE nor U+FFFF. A resource that decodes must encode
// again (podnet get -o yaml).
func printable(s string) bool {
	for _, r := range s {
		switch {
		case r == '\t' || r == '\n' || r == '\r':
		case unicode.IsControl(r) && r != 0x85, r == 0xfffe, r == 0xffff:
			return false
		}
	}
	return true
}

func sortedKeys(m map[string]string) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

var labelName = regexp.MustCompile(`^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$`)

// validLabelKey checks a Kubernetes qualified name: [prefix/]name.
func validLabelKey(k string) bool {
	name := k
	if p, n, ok := strings.Cut(k, "/"); ok {
		if p == "" || len(p) > 253 || !dnsSubdomain.MatchString(p) {
			return false
		}
		name = n
	}
	return name != "" && len(name) <= 63 && labelName.MatchString(name)
}

// ValidLabel reports whether key=value is a valid label; for the CLI.
func ValidLabel(key, value string) error {
	if !validLabelKey(key) {
		return fmt.Errorf("invalid label key %q", key)
	}
	if value != "" && (len(value) > 63 || !labelName.MatchString(value)) {
		return fmt.Errorf("invalid label value %q", value)
	}
	return nil
}

// validateSelector parses a selector with package selector, the
// evaluator every user of the selector shares; the reason gives the
// position where parsing stopped.
func validateSelector(fe *fieldErrors, field, s string) {
	if _, err := selector.Parse(s); err != nil {
		fe.add(field, s, err.Error())
	}
}

// parseIPv4 parses a dotted-quad IPv4 address.
func parseIPv4(s string) (netip.Addr, bool) {
	a, err := netip.ParseAddr(s)
	return a, err == nil && a.Is4()
}

// validMAC reports whether s is a 48-bit MAC address.
func validMAC(s string) bool {
	hw, err := net.ParseMAC(s)
	return err == nil && len(hw) == 6
}
