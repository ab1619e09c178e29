package resources

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
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
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte(text), 0o600)
		return p
	}
	calico := write("calicoctl.cfg", `apiVersion: projectcalico.org/v3
kind: CalicoAPIConfig
metadata:
spec:
  datastoreType: "etcdv3"
  etcdEndpoints: "https://a:2379,https://b:2379"
  etcdCACertFile: /etc/calico/ca.pem
  etcdCertFile: /etc/calico/cert.pem
  etcdKeyFile: /etc/calico/key.pem
`)
	calicoK8s := write("k8s.cfg", "apiVersion: projectcalico.org/v3\nkind: CalicoAPIConfig\nspec:\n  datastoreType: kubernetes\n  kubeconfig: /root/.kube/config\n")
	calicoUser := write("user.cfg", "apiVersion: projectcalico.org/v3\nkind: CalicoAPIConfig\nspec:\n  datastoreType: etcdv3\n  etcdEndpoints: http://a:2379\n  etcdUsername: root\n")
	calicoTypo := write("typo.cfg", "apiVersion: projectcalico.org/v3\nkind: CalicoAPIConfig\nspec:\n  datastoreType: etcdv3\n  etcdEndpoint: http://a:2379\n")
	otherKind := write("pool.yaml", "apiVersion: projectcalico.org/v3\nkind: IPPool\nspec: {}\n")
	tests := []struct {
		name, file, env string
		want            []string
		ca              string
		wantErr         string
	}{
		{"file", good, "", []string{"http://10.0.0.1:2379", "http://10.0.0.2:2379"}, "/ca.pem", ""},
		{"env wins", good, "unix:///tmp/a.sock, http://x:2379", []string{"unix:///tmp/a.sock", "http://x:2379"}, "/ca.pem", ""},
		{"named file missing", filepath.Join(dir, "nope"), "", nil, "", "no such file"},
		{"unknown field", bad, "", nil, "", `unknown field "endpoint"`},
		{"calicoctl.cfg", calico, "", []string{"https://a:2379", "https://b:2379"}, "/etc/calico/ca.pem", ""},
		{"calicoctl.cfg kubernetes", calicoK8s, "", nil, "", `spec.datastoreType "kubernetes" is not supported: podnet keeps its resources in etcd only`},
		{"calicoctl.cfg username", calicoUser, "", nil, "", "spec.etcdUsername: etcd user authentication is not supported"},
		{"calicoctl.cfg unknown field", calicoTypo, "", nil, "", `unknown field "etcdEndpoint"`},
		{"other kind", otherKind, "", nil, "", `kind "IPPool": want apiVersion projectcalico.org/v3, kind CalicoAPIConfig`},
		{"empty endpoint", blank, "", nil, "", "empty endpoint"},
		{"padded endpoint", padded, "", []string{"http://a:2379"}, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv(ConfigEnv, tt.file)
			t.Setenv(EndpointsEnv, tt.env)
			cfg, err := LoadClientConfig()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got %+v, %v; want error containing %q", cfg, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("got error %v", err)
			}
			if !reflect.DeepEqual(cfg.Endpoints, tt.want) || cfg.CAFile != tt.ca {
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
