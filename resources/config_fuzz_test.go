package resources

import (
	"reflect"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// FuzzLoadClientConfig gives LoadClientConfig's parser arbitrary
// configuration files, with an arbitrary $PODNET_DATASTORE_ENDPOINTS
// (reading the file and the environment is TestLoadClientConfig's). A file is refused with an error
// naming it, or gives what a plain reading of it says: TLS files as
// written, the environment's endpoints if it lists any, else the file's,
// else the default; never an empty or padded endpoint. (Its invariant
// found that an empty endpoint in the file was accepted as one.)
func FuzzLoadClientConfig(f *testing.F) {
	f.Add("datastore:\n  endpoints: [http://10.0.0.1:2379, http://10.0.0.2:2379]\n  caFile: /ca.pem\n", "")
	f.Add("datastore: {}\n", "unix:///tmp/a.sock, http://x:2379")
	f.Add("datastore:\n  endpoints:\n  - https://a:2379\n  certFile: c\n  keyFile: k\n", " , ,")
	f.Add("datastore:\n  endpoint: x\n", "")
	f.Add("{\"datastore\": {\"endpoints\": [\"unix:///run/podnet/etcd.sock\"]}}", "")
	f.Add("", "")
	f.Add("datastore:\n  endpoints: ['', ' ']\n", "")
	f.Add("datastore:\n  endpoints: [' unix:///a.sock ']\n", "")

	const path = "/etc/podnet/podnet.cfg"
	f.Fuzz(func(t *testing.T, file, env string) {
		cfg, err := clientConfig(path, []byte(file), env)
		if err != nil {
			if !strings.Contains(err.Error(), "config file "+path) {
				t.Fatalf("error does not name the file: %v", err)
			}
			return
		}
		var plain FileConfig
		if err := yaml.Unmarshal([]byte(file), &plain); err != nil {
			t.Fatalf("accepted a file a plain reading refuses (%v)", err)
		}
		d := plain.Datastore
		if cfg.CAFile != d.CAFile || cfg.CertFile != d.CertFile || cfg.KeyFile != d.KeyFile {
			t.Fatalf("TLS files %q %q %q, file says %q %q %q", cfg.CAFile, cfg.CertFile, cfg.KeyFile, d.CAFile, d.CertFile, d.KeyFile)
		}
		var inFile []string
		for i, e := range d.Endpoints {
			if e = strings.TrimSpace(e); e == "" {
				t.Fatalf("accepted the empty endpoint %d of %q", i, d.Endpoints)
			}
			inFile = append(inFile, e)
		}
		want := SplitEndpoints(env)
		if len(want) == 0 {
			want = inFile
		}
		if len(want) == 0 {
			want = []string{DefaultEndpoint}
		}
		if !reflect.DeepEqual(cfg.Endpoints, want) {
			t.Fatalf("endpoints %q, want %q", cfg.Endpoints, want)
		}
		for i, e := range cfg.Endpoints {
			if e == "" || strings.TrimSpace(e) != e {
				t.Fatalf("endpoint %d is %q: empty or padded", i, e)
			}
		}
		for _, e := range SplitEndpoints(env) {
			if strings.Contains(e, ",") {
				t.Fatalf("endpoint %q from the environment holds a comma", e)
			}
		}
	})
}
