package resources

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"

	"sigs.k8s.io/yaml"

	"podnet/datastore"
)

// Where the CLI and the daemon find the datastore.
const (
	// DefaultConfigFile is the client configuration file.
	DefaultConfigFile = "/etc/podnet/podnet.cfg"
	// ConfigEnv overrides DefaultConfigFile.
	ConfigEnv = "PODNET_CONFIG"
	// EndpointsEnv lists etcd endpoints, comma-separated; it overrides
	// the file's.
	EndpointsEnv = "PODNET_DATASTORE_ENDPOINTS"
	// DefaultEndpoint is the embedded etcd of the local daemon.
	DefaultEndpoint = "unix:///run/podnet/etcd.sock"
)

// FileConfig is the client configuration file:
//
//	datastore:
//	  endpoints: [https://10.0.0.1:2379, https://10.0.0.2:2379]
//	  caFile: /etc/podnet/ca.pem
//	  certFile: /etc/podnet/cert.pem
//	  keyFile: /etc/podnet/key.pem
type FileConfig struct {
	Datastore struct {
		Endpoints []string `json:"endpoints,omitempty"`
		CAFile    string   `json:"caFile,omitempty"`
		CertFile  string   `json:"certFile,omitempty"`
		KeyFile   string   `json:"keyFile,omitempty"`
	} `json:"datastore"`
}

// LoadClientConfig says how to reach the datastore: endpoints from
// $PODNET_DATASTORE_ENDPOINTS, else from the configuration file
// ($PODNET_CONFIG or /etc/podnet/podnet.cfg), else DefaultEndpoint; TLS
// files from the configuration file. A missing default file is not an
// error; a missing file named by $PODNET_CONFIG, or a bad one (unknown
// fields, an empty endpoint), is. Endpoints are trimmed of blanks.
func LoadClientConfig() (datastore.Config, error) {
	path, explicit := os.LookupEnv(ConfigEnv)
	if !explicit || path == "" {
		path, explicit = DefaultConfigFile, false
	}
	data, err := os.ReadFile(path)
	if err != nil && (explicit || !errors.Is(err, fs.ErrNotExist)) {
		return datastore.Config{}, fmt.Errorf("config file: %w", err)
	}
	return clientConfig(path, data, os.Getenv(EndpointsEnv))
}

// clientConfig is LoadClientConfig on what it read: data, the contents
// of the configuration file at path (nil: there is none), and env, the
// value of $PODNET_DATASTORE_ENDPOINTS.
func clientConfig(path string, data []byte, env string) (datastore.Config, error) {
	var cfg datastore.Config
	if data != nil {
		var fc FileConfig
		if err := yaml.UnmarshalStrict(data, &fc); err != nil {
			return cfg, fmt.Errorf("config file %s: %v", path, err)
		}
		for i, e := range fc.Datastore.Endpoints {
			e = strings.TrimSpace(e)
			if e == "" {
				return cfg, fmt.Errorf("config file %s: datastore.endpoints[%d]: empty endpoint", path, i)
			}
			cfg.Endpoints = append(cfg.Endpoints, e)
		}
		cfg.CAFile, cfg.CertFile, cfg.KeyFile = fc.Datastore.CAFile, fc.Datastore.CertFile, fc.Datastore.KeyFile
	}
	if env := SplitEndpoints(env); len(env) > 0 {
		cfg.Endpoints = env
	}
	if len(cfg.Endpoints) == 0 {
		cfg.Endpoints = []string{DefaultEndpoint}
	}
	return cfg, nil
}

// SplitEndpoints splits a comma-separated endpoint list, dropping blanks.
func SplitEndpoints(s string) []string {
	var out []string
	for _, e := range strings.Split(s, ",") {
		if e = strings.TrimSpace(e); e != "" {
			out = append(out, e)
		}
	}
	return out
}
