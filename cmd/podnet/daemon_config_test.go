package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

const exampleDaemonConfig = "../../deploy/systemd/daemon.yaml"

// The example config shows every key, and each value it shows is valid.
func TestDaemonConfigExampleHasEveryKey(t *testing.T) {
	data, err := os.ReadFile(exampleDaemonConfig)
	if err != nil {
		t.Fatal(err)
	}
	keyLine := regexp.MustCompile(`(?m)^#([a-z0-9-]+): `)
	shown := map[string]bool{}
	for _, m := range keyLine.FindAllStringSubmatch(string(data), -1) {
		shown[m[1]] = true
	}
	flags := newDaemonCmd().Flags()
	flags.VisitAll(func(f *pflag.Flag) {
		if !notInConfigFile[f.Name] && !shown[f.Name] {
			t.Errorf("daemon flag --%s has no key in %s", f.Name, exampleDaemonConfig)
		}
	})
	// Uncommented, the example must load.
	uncommented := keyLine.ReplaceAllString(string(data), "$1: ")
	p := filepath.Join(t.TempDir(), "daemon.yaml")
	if err := os.WriteFile(p, []byte(uncommented), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := applyDaemonConfig(newDaemonCmd().Flags(), p, true); err != nil {
		t.Fatalf("the example, uncommented: %v", err)
	}
}

func TestApplyDaemonConfig(t *testing.T) {
	for _, tc := range []struct {
		name    string
		file    string // "" = no file
		args    []string
		missing bool // the path does not exist
		want    map[string]string
		wantErr string
	}{
		{name: "file sets, flag wins",
			file: "metrics-listen: 127.0.0.1:9091\npod-mtu: 1400\ntap-offload: false\nnat-udp-timeout: 5s\netcd-listen: [https://10.0.0.1:2379, https://10.0.0.1:2479]\n",
			args: []string{"--pod-mtu", "1300"},
			want: map[string]string{"metrics-listen": "127.0.0.1:9091", "pod-mtu": "1300", "tap-offload": "false",
				"nat-udp-timeout": "5s", "etcd-listen": "[https://10.0.0.1:2379,https://10.0.0.1:2479]"}},
		{name: "a flag over a list", file: "etcd-listen: [https://10.0.0.1:2379]\n", args: []string{"--etcd-listen", "https://10.0.0.9:2379"},
			want: map[string]string{"etcd-listen": "[https://10.0.0.9:2379]"}},
		{name: "empty file", file: "\n", want: map[string]string{"pod-mtu": "0", "socket": "/run/podnet/podnet.sock"}},
		{name: "unknown key", file: "metrics-listn: 127.0.0.1:9091\n", wantErr: `unknown key "metrics-listn"`},
		{name: "config in the config", file: "config: /x.yaml\n", wantErr: `unknown key "config"`},
		{name: "bad number", file: "pod-mtu: big\n", wantErr: `key "pod-mtu"`},
		{name: "list for one value", file: "node: [a, b]\n", wantErr: `key "node": a list, but the flag takes one string`},
		{name: "map value", file: "node: {a: b}\n", wantErr: `key "node": want a string, number or boolean`},
		{name: "no value", file: "node:\n", wantErr: `key "node": no value`},
		{name: "not a map", file: "- a\n", wantErr: "daemon config"},
		{name: "explicit and missing", missing: true, args: []string{"--config", "X"}, wantErr: "daemon config: open"},
		{name: "default and missing", missing: true, want: map[string]string{"pod-mtu": "0"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "daemon.yaml")
			if !tc.missing {
				if err := os.WriteFile(p, []byte(tc.file), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			cmd := newDaemonCmd()
			args := tc.args
			for i, a := range args {
				if a == "X" {
					args[i] = p
				}
			}
			if err := cmd.Flags().Parse(args); err != nil {
				t.Fatal(err)
			}
			err := applyDaemonConfig(cmd.Flags(), p, cmd.Flags().Changed("config"))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for k, v := range tc.want {
				if got := cmd.Flags().Lookup(k).Value.String(); got != v {
					t.Errorf("--%s = %q, want %q", k, got, v)
				}
			}
		})
	}
}
