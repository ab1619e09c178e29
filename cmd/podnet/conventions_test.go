package main

import (
	"encoding"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"podnet/api"
)

// walkCommands calls f on every command under root.
func walkCommands(root *cobra.Command, f func(*cobra.Command)) {
	f(root)
	for _, c := range root.Commands() {
		walkCommands(c, f)
	}
}

// commandPath is c's path without "podnet ", as jsonTypes has it.
func commandPath(c *cobra.Command) string { return strings.TrimPrefix(c.CommandPath(), "podnet ") }

// TestOutputFlags: every -o is the one format flag (formatValue), its
// default is table, it names its formats the same way, and the commands
// that offer json are exactly those jsonTypes lists. lab graph's -o is
// its output file (a picture has no table), and node diags' -o its
// bundle's: the two exceptions.
func TestOutputFlags(t *testing.T) {
	offersJSON := map[string]bool{}
	walkCommands(newRootCmd(), func(c *cobra.Command) {
		f := c.Flags().Lookup("output")
		if f == nil || commandPath(c) == "lab graph" || commandPath(c) == "node diags" {
			return
		}
		fv, ok := f.Value.(*formatValue)
		if !ok {
			t.Errorf("%s: -o is a %T, not the output format flag (outputFlag)", c.CommandPath(), f.Value)
			return
		}
		if f.Shorthand != "o" || f.DefValue != formatTable || fv.formats[0] != formatTable {
			t.Errorf("%s: -o%s default %q, want -o with default table", c.CommandPath(), f.Shorthand, f.DefValue)
		}
		if !strings.HasPrefix(f.Usage, "output format: table") {
			t.Errorf("%s: -o help %q does not start with \"output format: table\"", c.CommandPath(), f.Usage)
		}
		for _, x := range fv.formats {
			if !slices.Contains([]string{formatTable, formatWide, formatJSON, formatYAML}, x) {
				t.Errorf("%s: -o offers %q, which is not one of podnet's formats", c.CommandPath(), x)
			}
		}
		if slices.Contains(fv.formats, formatJSON) {
			offersJSON[commandPath(c)] = true
		}
	})
	for path := range offersJSON {
		if _, ok := jsonTypes[path]; !ok && path != "get" {
			t.Errorf("%s -o json: its type is not in jsonTypes", path)
		}
	}
	for path := range jsonTypes {
		if !offersJSON[path] {
			t.Errorf("jsonTypes lists %q, which has no -o json", path)
		}
	}
}

// TestFormatAliases: get takes calicoctl's ps for table; a format no
// command has is refused while flags parse.
func TestFormatAliases(t *testing.T) {
	var o string
	cmd := &cobra.Command{Use: "x"}
	outputFlagVar(cmd, &o, map[string]string{"ps": formatTable}, formatTable, formatWide, formatYAML, formatJSON)
	for in, want := range map[string]string{"ps": formatTable, "table": formatTable, "wide": formatWide, "json": formatJSON, "yaml": formatYAML} {
		if err := cmd.Flags().Set("output", in); err != nil || o != want {
			t.Errorf("-o %s: got %q, %v, want %q", in, o, err, want)
		}
	}
	if err := cmd.Flags().Set("output", "text"); err == nil || !strings.Contains(err.Error(), `unknown output format "text" (want one of table, wide, yaml, json)`) {
		t.Errorf("-o text: got %v", err)
	}
}

var camelCase = regexp.MustCompile(`^[a-z][a-zA-Z0-9]*$`)

// checkJSONKeys reports every field that encoding/json would print with
// a key that is not camelCase, walking t's fields, elements and map
// values. Types that marshal themselves (netip.Addr, time.Time) are
// leaves.
func checkJSONKeys(t reflect.Type, where string, seen map[reflect.Type]bool, bad func(string)) {
	marshaler := reflect.TypeFor[json.Marshaler]()
	textMarshaler := reflect.TypeFor[encoding.TextMarshaler]()
	if t.Implements(marshaler) || t.Implements(textMarshaler) ||
		reflect.PointerTo(t).Implements(marshaler) || reflect.PointerTo(t).Implements(textMarshaler) {
		return
	}
	switch t.Kind() {
	case reflect.Pointer, reflect.Slice, reflect.Array:
		checkJSONKeys(t.Elem(), where+"[]", seen, bad)
	case reflect.Map:
		checkJSONKeys(t.Elem(), where+"{}", seen, bad)
	case reflect.Struct:
		if seen[t] {
			return
		}
		seen[t] = true
		for i := range t.NumField() {
			f := t.Field(i)
			if !f.IsExported() && !f.Anonymous {
				continue
			}
			tag, hasTag := f.Tag.Lookup("json")
			name, _, _ := strings.Cut(tag, ",")
			switch {
			case name == "-" && tag == "-":
				continue
			case f.Anonymous && name == "":
				// Embedded without a name: its fields are inlined.
				checkJSONKeys(f.Type, where, seen, bad)
				continue
			case !hasTag || name == "":
				bad(where + "." + f.Name + ": no json tag (prints as " + f.Name + ")")
			case !camelCase.MatchString(name):
				bad(where + "." + f.Name + `: json key "` + name + `" is not camelCase`)
			}
			checkJSONKeys(f.Type, where+"."+f.Name, seen, bad)
		}
	}
}

// TestJSONKeysCamelCase walks the type every command prints with -o json
// (jsonTypes; get's are the api kinds) and fails on a field that would
// print with a key that is not camelCase.
func TestJSONKeysCamelCase(t *testing.T) {
	types := map[string]reflect.Type{}
	for path, v := range jsonTypes {
		types[path] = reflect.TypeOf(v)
	}
	for _, k := range api.Kinds() {
		types["get "+k.Kind] = reflect.TypeOf(k.New())
	}
	for path, typ := range types {
		checkJSONKeys(typ, typ.String(), map[reflect.Type]bool{}, func(s string) {
			t.Errorf("%s -o json: %s", path, s)
		})
	}
}

// TestCheckJSONKeys: the walk above catches what it is for.
func TestCheckJSONKeys(t *testing.T) {
	type inner struct {
		OK  int `json:"ok"`
		Bad int
	}
	type outer struct {
		inner
		Snake  string           `json:"snake_case"`
		Nested map[string]inner `json:"nested"`
		Skip   int              `json:"-"`
		hidden int
	}
	var got []string
	checkJSONKeys(reflect.TypeFor[[]outer](), "x", map[reflect.Type]bool{}, func(s string) { got = append(got, s) })
	want := []string{
		"x[].Bad: no json tag (prints as Bad)",
		`x[].Snake: json key "snake_case" is not camelCase`,
	}
	if !slices.Equal(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
}

// TestExitCodes runs podnet as a process (TestMain's mainEnv) and checks
// the exit code and the message of wrong calls: 2 with a hint at --help.
func TestExitCodes(t *testing.T) {
	for _, tt := range []struct {
		args []string
		code int
		want []string
	}{
		{[]string{"--help"}, 0, nil},
		// A group without a subcommand shows its help.
		{[]string{"nat"}, 0, []string{"Usage:\n  podnet nat [command]\n\nAvailable Commands:"}},
		{[]string{"nosuch"}, 2, []string{`unknown command "nosuch" for "podnet"`, "Run 'podnet --help' for usage."}},
		{[]string{"stat"}, 2, []string{`unknown command "stat" for "podnet"; did you mean status?`}},
		{[]string{"nat", "lsit"}, 2, []string{`unknown command "lsit" for "podnet nat"`, "Run 'podnet nat --help' for usage."}},
		{[]string{"status", "--bogus"}, 2, []string{"unknown flag: --bogus", "Run 'podnet status --help' for usage."}},
		{[]string{"status", "-o", "text"}, 2, []string{`unknown output format "text" (want one of table, json)`}},
		{[]string{"pod", "add"}, 2, []string{"accepts 1 arg(s), received 0", "Run 'podnet pod add --help' for usage."}},
		{[]string{"route", "list", "extra"}, 2, []string{`unknown command "extra" for "podnet route list"`}},
		{[]string{"get"}, 2, []string{"requires at least 1 arg(s)"}},
		{[]string{"get", "foo"}, 2, []string{"resource type 'foo' is not supported; the kinds podnet knows",
			"  ippool             ippools, ipp, ipps, pool, pools\n", "  bgppeer            bgppeers, bgpp, bgpps, bp, bps\n"}},
		{[]string{"patch", "foo", "x", "-p", "{}"}, 2, []string{"resource type 'foo' is not supported; the kinds podnet knows"}},
		{[]string{"label", "node", "w", "rack", "--datastore", "unix:///nonexistent/podnet-conv-test.sock"}, 2, []string{"give the label as key=value"}},
		{[]string{"ipam", "configure"}, 2, []string{"nothing to set"}},
		{[]string{"ipam", "show", "--ip", "10.0.0.1", "-o", "json"}, 2, []string{"--ip and --show-borrowed print text only"}},
		{[]string{"ipam", "release"}, 2, []string{"give --ip or --leaked"}},
		{[]string{"delete", "ippool"}, 2, []string{"usage: podnet delete -f FILE | podnet delete KIND NAME..."}},
		// A command called rightly that cannot do its work: 1.
		{[]string{"status", "--socket", "/nonexistent/podnet-conv-test.sock"}, 1, []string{"/nonexistent/podnet-conv-test.sock"}},
	} {
		cmd := exec.Command(os.Args[0], append([]string{"-test.run=^$", "--"}, tt.args...)...)
		cmd.Env = append(os.Environ(), mainEnv+"=1")
		out, err := cmd.CombinedOutput()
		code := 0
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		if code != tt.code {
			t.Errorf("podnet %s: exit code %d, want %d; output:\n%s", strings.Join(tt.args, " "), code, tt.code, out)
		}
		for _, w := range tt.want {
			if !strings.Contains(string(out), w) {
				t.Errorf("podnet %s: output lacks %q:\n%s", strings.Join(tt.args, " "), w, out)
			}
		}
	}
}

// TestEveryCommandChecksArgs: a command without an Args check would take
// stray arguments silently (cobra checks only under the root), so every
// command has one, and wrong arguments are a usage error.
func TestEveryCommandChecksArgs(t *testing.T) {
	walkCommands(newRootCmd(), func(c *cobra.Command) {
		if c.Args == nil {
			t.Errorf("%s: no Args check (cobra.NoArgs, ExactArgs, ...)", c.CommandPath())
		}
	})
}
