package main

import (
	"bytes"
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"podnet/ipam"
)

var update = flag.Bool("update", false, "rewrite golden files")

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read golden (run with -update to create): %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("output differs from %s:\n--- got\n%s\n--- want\n%s", path, got, want)
	}
}

func TestIPAMShowGolden(t *testing.T) {
	p := netip.MustParsePrefix
	usage := []ipam.PoolUsage{
		{Name: "default-ipv4-ippool", CIDR: p("192.168.0.0/16"), Total: 65536, InUse: 5, Blocks: []ipam.BlockUsage{
			{CIDR: p("192.168.48.0/26"), Pool: "default-ipv4-ippool", Node: "worker1", Total: 64, InUse: 3},
			{CIDR: p("192.168.201.64/26"), Pool: "default-ipv4-ippool", Node: "worker2", Total: 64, InUse: 2},
		}},
		{Name: "new-pool", CIDR: p("10.10.0.0/28"), Total: 16, InUse: 16, Blocks: []ipam.BlockUsage{
			{CIDR: p("10.10.0.0/28"), Pool: "new-pool", Total: 16, InUse: 16},
		}},
	}
	for _, tt := range []struct {
		name   string
		blocks bool
	}{{"ipam-show", false}, {"ipam-show-blocks", true}} {
		t.Run(tt.name, func(t *testing.T) {
			var b bytes.Buffer
			writeUsage(&b, usage, tt.blocks)
			golden(t, tt.name, b.Bytes())
		})
	}
}
