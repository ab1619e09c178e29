package ipam

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
)

func TestConfig(t *testing.T) {
	t.Parallel()
	m, _ := startTest(t)
	ctx := context.Background()
	got, err := m.GetConfig(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got != (Config{StrictAffinity: false, AutoAllocateBlocks: true, MaxBlocksPerHost: 0}) {
		t.Fatalf("default: got %+v", got)
	}
	tests := []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{"strict with limit", Config{StrictAffinity: true, AutoAllocateBlocks: true, MaxBlocksPerHost: 4}, ""},
		{"defaults", DefaultConfig, ""},
		{"limit without strict", Config{AutoAllocateBlocks: true, MaxBlocksPerHost: 4}, "MaxBlocksPerHost requires StrictAffinity to be enabled"},
		{"neither", Config{}, "Cannot disable 'StrictAffinity' and 'AutoAllocateBlocks' at the same time"},
		{"negative", Config{StrictAffinity: true, MaxBlocksPerHost: -1}, "must not be negative"},
		{"strict without auto", Config{StrictAffinity: true}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := m.SetConfig(ctx, tt.cfg)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got %v, want error containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got, err := m.GetConfig(ctx)
			if err != nil || got != tt.cfg {
				t.Fatalf("got %+v %v, want %+v", got, err, tt.cfg)
			}
		})
	}
	// Stored with Calico's field names.
	if err := m.SetConfig(ctx, Config{StrictAffinity: true, AutoAllocateBlocks: true, MaxBlocksPerHost: 3}); err != nil {
		t.Fatal(err)
	}
	kv, err := m.config.Get(ctx, "default")
	if err != nil {
		t.Fatal(err)
	}
	var raw map[string]any
	json.Unmarshal(kv.Value, &raw)
	if raw["strict_affinity"] != true || raw["auto_allocate_blocks"] != true || raw["maxBlocksPerHost"] != 3.0 {
		t.Fatalf("stored: got %s", kv.Value)
	}
}

func TestPoolCheck(t *testing.T) {
	tests := []struct {
		name    string
		pool    Pool
		wantErr string
	}{
		{"default block size", pool("p", "10.0.0.0/16", 0), ""},
		{"unmasked", pool("p", "10.0.0.1/16", 26), "not masked"},
		{"ipv6", pool("p", "fd00::/48", 122), "not an IPv4 prefix"},
		{"block too big", pool("p", "10.0.0.0/16", 19), "block size 19 outside 20..32"},
		{"pool smaller than block", pool("p", "10.0.0.0/28", 26), "smaller than its block size"},
		{"zero", Pool{Name: "z"}, "not an IPv4 prefix"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.pool.check()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("got %v, want error containing %q", err, tt.wantErr)
			}
		})
	}
}
