package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sort"
	"strconv"
	"strings"

	"github.com/spf13/pflag"
	"sigs.k8s.io/yaml"
)

// DefaultDaemonConfig is the daemon's configuration file, read when it
// exists and --config is not given.
const DefaultDaemonConfig = "/etc/podnet/daemon.yaml"

// notInConfigFile are daemon flags a configuration file cannot set.
var notInConfigFile = map[string]bool{"config": true, "help": true}

// applyDaemonConfig sets the daemon's flags from the YAML file at path:
// each key is a flag name without its dashes ("metrics-listen"), each
// value a string, number, boolean or, for list flags, a list. A flag given
// on the command line wins over the file. A missing file is an error only
// when explicit (the path came from --config). Unknown keys and bad values
// are errors naming the key, so a typo never passes silently.
func applyDaemonConfig(flags *pflag.FlagSet, path string, explicit bool) error {
	data, err := os.ReadFile(path)
	if err != nil {
		if !explicit && errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("daemon config: %w", err)
	}
	var keys map[string]any
	if err := yaml.Unmarshal(data, &keys); err != nil {
		return fmt.Errorf("daemon config %s: %v", path, err)
	}
	names := make([]string, 0, len(keys))
	for k := range keys {
		names = append(names, k)
	}
	sort.Strings(names) // errors in a stable order
	for _, key := range names {
		f := flags.Lookup(key)
		if f == nil || notInConfigFile[key] {
			return fmt.Errorf("daemon config %s: unknown key %q (keys are the daemon's flag names, see 'podnet daemon --help')", path, key)
		}
		if f.Changed {
			continue // the command line wins
		}
		values, err := configValues(keys[key], f.Value.Type())
		if err != nil {
			return fmt.Errorf("daemon config %s: key %q: %v", path, key, err)
		}
		for _, v := range values {
			if err := flags.Set(key, v); err != nil {
				return fmt.Errorf("daemon config %s: key %q: %v", path, key, err)
			}
		}
	}
	return nil
}

// configValues turns a YAML value into the strings the flag's Set takes:
// one per list element for list flags (whose first Set replaces the
// default and the others append).
func configValues(v any, flagType string) ([]string, error) {
	list := strings.HasSuffix(flagType, "Slice") || strings.HasSuffix(flagType, "Array")
	if items, ok := v.([]any); ok {
		if !list {
			return nil, fmt.Errorf("a list, but the flag takes one %s", flagType)
		}
		out := make([]string, 0, len(items))
		for _, it := range items {
			s, err := scalar(it)
			if err != nil {
				return nil, err
			}
			out = append(out, s)
		}
		return out, nil
	}
	s, err := scalar(v)
	if err != nil {
		return nil, err
	}
	return []string{s}, nil
}

func scalar(v any) (string, error) {
	switch v := v.(type) {
	case string:
		return v, nil
	case bool:
		return strconv.FormatBool(v), nil
	case float64:
		return strconv.FormatFloat(v, 'f', -1, 64), nil
	case nil:
		return "", errors.New("no value")
	default:
		return "", fmt.Errorf("want a string, number or boolean, not %T", v)
	}
}
