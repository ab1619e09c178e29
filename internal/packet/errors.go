package packet

import "errors"

// ParseError is the reason a packet was rejected. The switch uses String()
// as the name of the drop counter, so the values are stable and short.
// ParseOK is the zero value and means "no error"; it is never returned
// through the error interface.
type ParseError uint8

// Parse failures, one per drop counter.
const (
	ParseOK                 ParseError = iota
	ErrTooShort                        // buffer shorter than the fixed header
	ErrBadVersion                      // IPv4 version field is not 4
	ErrBadIHL                          // IHL < 5 or header longer than the buffer
	ErrBadTotalLength                  // IPv4 total length outside [IHL*4, len]
	ErrBadARP                          // not Ethernet/IPv4 ARP
	ErrTruncatedL4                     // transport header missing or cut short
	ErrBadVirtioHeader                 // virtio-net header missing or inconsistent
	ErrBadGSO                          // GSO request the segmenter cannot honour
	ErrUnsupportedEtherType            // frame is not the EtherType asked for
	ErrTooManySegments                 // caller's out vector shorter than the segment count
	ErrBufferTooSmall                  // a caller-provided buffer cannot hold the result
	numParseErrors
)

var parseErrorNames = [numParseErrors]string{
	ParseOK:                 "ok",
	ErrTooShort:             "too-short",
	ErrBadVersion:           "bad-version",
	ErrBadIHL:               "bad-ihl",
	ErrBadTotalLength:       "bad-total-length",
	ErrBadARP:               "bad-arp",
	ErrTruncatedL4:          "truncated-l4",
	ErrBadVirtioHeader:      "bad-virtio-header",
	ErrBadGSO:               "bad-gso",
	ErrUnsupportedEtherType: "unsupported-ethertype",
	ErrTooManySegments:      "too-many-segments",
	ErrBufferTooSmall:       "buffer-too-small",
}

// String returns the short kebab-case reason used as a drop-counter name.
func (e ParseError) String() string {
	if e < numParseErrors {
		return parseErrorNames[e]
	}
	return "unknown"
}

// Error makes a ParseError usable as an error, so errors.Is(err,
// ErrBadGSO) works on errors returned by this package. Converting a
// ParseError to an error does not allocate (Go keeps single-byte values
// preboxed), which matters on the drop path.
func (e ParseError) Error() string { return "packet: " + e.String() }

// Error is a failure with the operation and field that caused it. The
// package returns pointers to preallocated values, so a rejected packet
// costs no allocation; callers count drops with ReasonOf(err).
type Error struct {
	Op     string     // operation that failed, e.g. "segment tcpv4"
	Reason ParseError // drop-counter reason
	Detail string     // which field or limit was violated
}

func (e *Error) Error() string {
	return "packet: " + e.Op + ": " + e.Reason.String() + ": " + e.Detail
}

// Unwrap returns the reason, so errors.Is(err, ErrBadGSO) holds.
func (e *Error) Unwrap() error { return e.Reason }

// ReasonOf returns the ParseError carried by err, for counting the drop:
// ParseOK for nil, the Reason of an *Error or a bare ParseError, and a
// value whose String is "unknown" for errors from elsewhere.
func ReasonOf(err error) ParseError {
	if err == nil {
		return ParseOK
	}
	// Walk the chain by hand: errors.As would need a pointer to a local
	// ParseError, which escapes and allocates on every counted drop.
	for err != nil {
		switch e := err.(type) {
		case ParseError:
			return e
		case *Error:
			return e.Reason
		}
		err = errors.Unwrap(err)
	}
	return numParseErrors
}
