package resources

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

func TestLoadClientConfig(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "podnet.cfg")
	os.WriteFile(good, []byte("datastore:\n  endpoints: [http://10.0.0.1:2379, http://10.0.0.2:2379]\n  caFile: /ca.pem\n"), 0o600)
	bad := filepath.Join(dir, "bad.cfg")
	os.WriteFile(bad, []byte("datastore:\n  endpoint: x\n"), 0o600)
	blank := filepath.Join(dir, "blank.cfg")
	os.WriteFile(blank, []byte("datastore:\n  endpoints: ['http://a:2379', ' ']\n"), 0o600)
	padded := filepath.Join(dir, "padded.cfg")
	os.WriteFile(padded, []byte("datastore:\n  endpoints: [' http://a:2379 ']\n"), 0o600)
	tests := []struct {
		name, file, env string
		want            []string
		ca              string
		wantErr         bool
	}{
		{"file", good, "", []string{"http://10.0.0.1:2379", "http://10.0.0.2:2379"}, "/ca.pem", false},
		{"env wins", good, "unix:///tmp/a.sock, http://x:2379", []string{"unix:///tmp/a.sock", "http://x:2379"}, "/ca.pem", false},
		{"named file missing", filepath.Join(dir, "nope"), "", nil, "", true},
		{"unknown field", bad, "", nil, "", true},
		{"empty endpoint", blank, "", nil, "", true},
		{"padded endpoint", padded, "", []string{"http://a:2379"}, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv(ConfigEnv, tt.file)
			t.Setenv(EndpointsEnv, tt.env)
			cfg, err := LoadClientConfig()
			if (err != nil) != tt.wantErr {
				t.Fatalf("got error %v, want error %v", err, tt.wantErr)
			}
			if err == nil && (!reflect.DeepEqual(cfg.Endpoints, tt.want) || cfg.CAFile != tt.ca) {
				t.Fatalf("got %+v, want %v %q", cfg, tt.want, tt.ca)
			}
		})
	}
	t.Setenv(ConfigEnv, blank)
	t.Setenv(EndpointsEnv, "")
	if _, err := LoadClientConfig(); err == nil || err.Error() != "config file "+blank+": datastore.endpoints[1]: empty endpoint" {
		t.Fatalf("empty endpoint: got %v", err)
	}
	if _, err := os.Stat(DefaultConfigFile); os.IsNotExist(err) {
		t.Setenv(ConfigEnv, "")
		t.Setenv(EndpointsEnv, "")
		cfg, err := LoadClientConfig()
		if err != nil || !reflect.DeepEqual(cfg.Endpoints, []string{DefaultEndpoint}) {
			t.Fatalf("default: got %+v %v", cfg, err)
		}
	}
}
