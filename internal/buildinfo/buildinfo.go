// Package buildinfo says which podnet this binary is: its version, the
// commit it was built from and the Go release that built it.
package buildinfo

import (
	"runtime"
	"runtime/debug"
)

// Set by the Makefile with -ldflags -X, since builds with -buildvcs=false
// (or from a source archive) carry no VCS stamp of their own.
var (
	version string
	commit  string
)

// Info describes a build.
type Info struct {
	Version   string `json:"version"`
	Commit    string `json:"commit"`
	Modified  bool   `json:"modified,omitempty"`
	GoVersion string `json:"goVersion"`
}

// Get returns this binary's build information. Values given at link time
// win over the Go build stamp; what neither knows is "unknown".
func Get() Info {
	in := Info{Version: version, Commit: commit, GoVersion: runtime.Version()}
	if bi, ok := debug.ReadBuildInfo(); ok {
		if in.Version == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			in.Version = bi.Main.Version
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				if in.Commit == "" {
					in.Commit = s.Value
				}
			case "vcs.modified":
				in.Modified = s.Value == "true"
			}
		}
	}
	if in.Version == "" {
		in.Version = "devel"
	}
	if in.Commit == "" {
		in.Commit = "unknown"
	}
	return in
}
