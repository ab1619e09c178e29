// Package procnet reads the counters of /proc/net/snmp and
// /proc/net/netstat, where each section is two lines: "Ip: Forwarding
// DefaultTTL ..." naming the counters, then "Ip: 1 64 ..." with their
// values.
package procnet

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// ErrNoCounter: the text has no such section or counter (an older kernel
// may lack a newer counter).
var ErrNoCounter = errors.New("no such counter")

// Counter returns counter name of section ("Ip", "IpExt", "Udp", ...) in
// text, the contents of /proc/net/snmp or /proc/net/netstat.
func Counter(text, section, name string) (uint64, error) {
	prefix := section + ":"
	var names []string
	for line := range strings.Lines(text) {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] != prefix {
			continue
		}
		if names == nil {
			names = f
			continue
		}
		for i, n := range names {
			if n == name && i < len(f) {
				v, err := strconv.ParseUint(f[i], 10, 64)
				if err != nil {
					return 0, fmt.Errorf("%s %s: %w", section, name, err)
				}
				return v, nil
			}
		}
		break
	}
	return 0, fmt.Errorf("%s %s: %w", section, name, ErrNoCounter)
}
