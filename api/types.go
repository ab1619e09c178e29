package api

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Time is a timestamp serialized as RFC 3339 in UTC, like Kubernetes'
// metav1.Time. The zero Time is omitted (omitzero) or written as null.
type Time struct{ time.Time }

// NewTime returns t in UTC, truncated to seconds as Kubernetes stores it,
// so that what is stored is exactly what is printed and read back.
func NewTime(t time.Time) Time { return Time{t.UTC().Truncate(time.Second)} }

// MarshalJSON implements json.Marshaler.
func (t Time) MarshalJSON() ([]byte, error) {
	if t.IsZero() {
		return []byte("null"), nil
	}
	return json.Marshal(t.UTC().Format(time.RFC3339Nano))
}

// UnmarshalJSON implements json.Unmarshaler.
func (t *Time) UnmarshalJSON(b []byte) error {
	if bytes.Equal(b, []byte("null")) {
		*t = Time{}
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("timestamp must be an RFC 3339 string: %s", b)
	}
	if s == "" {
		*t = Time{}
		return nil
	}
	v, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return fmt.Errorf("invalid timestamp %q: want RFC 3339, e.g. 2024-11-17T15:37:45Z", s)
	}
	*t = Time{v.UTC()}
	return nil
}

// ASNumber is a BGP autonomous system number. Like Calico's
// numorstring.ASNumber it reads a number (64512), a numeric string
// ("64512") or asdot notation ("1.10" = 1*65536+10), and writes a number.
type ASNumber uint32

// ParseASNumber parses plain or asdot notation.
func ParseASNumber(s string) (ASNumber, error) {
	if hi, lo, ok := strings.Cut(s, "."); ok {
		h, err1 := strconv.ParseUint(hi, 10, 16)
		l, err2 := strconv.ParseUint(lo, 10, 16)
		if err1 != nil || err2 != nil {
			return 0, fmt.Errorf("invalid AS number %q", s)
		}
		return ASNumber(h<<16 | l), nil
	}
	v, err := strconv.ParseUint(s, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("invalid AS number %q: want 1..4294967295 or asdot notation", s)
	}
	return ASNumber(v), nil
}

// String implements fmt.Stringer (plain notation).
func (a ASNumber) String() string { return strconv.FormatUint(uint64(a), 10) }

// UnmarshalJSON implements json.Unmarshaler.
func (a *ASNumber) UnmarshalJSON(b []byte) error {
	s := string(b)
	if len(b) > 0 && b[0] == '"' {
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
	} else if strings.ContainsAny(s, ".eE") {
		// An unquoted 1.10 reaches us as the number 1.1: asdot only as a
		// string, as Calico takes it.
		return fmt.Errorf("AS number %s: asdot notation must be quoted, e.g. \"1.10\"", s)
	}
	v, err := ParseASNumber(s)
	if err != nil {
		return err
	}
	*a = v
	return nil
}

// Duration is a time.Duration written as a Go duration string ("1m30s"),
// like Kubernetes' metav1.Duration.
type Duration struct{ time.Duration }

// MarshalJSON implements json.Marshaler.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(d.Duration.String()) }

// UnmarshalJSON implements json.Unmarshaler.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration must be a string such as \"90s\": %s", b)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("invalid duration %q", s)
	}
	d.Duration = v
	return nil
}
