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
		var err error
		if cfg, err = parseConfigFile(data); err != nil {
			return datastore.Config{}, fmt.Errorf("config file %s: %w", path, err)
		}
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

// CalicoAPIConfig is calicoctl's configuration file (calicoctl.cfg), which
// the CLI also reads, so that an existing one can be pointed at with
// $PODNET_CONFIG:
//
//	apiVersion: projectcalico.org/v3
//	kind: CalicoAPIConfig
//	spec:
//	  datastoreType: etcdv3
//	  etcdEndpoints: https://10.0.0.1:2379,https://10.0.0.2:2379
//	  etcdCACertFile: /etc/calico/ca.pem
//	  etcdCertFile: /etc/calico/cert.pem
//	  etcdKeyFile: /etc/calico/key.pem
//
// Only the etcdv3 datastore exists here (no Kubernetes API), and the
// certificates come from files.
type CalicoAPIConfig struct {
	APIVersion string         `json:"apiVersion"`
	Kind       string         `json:"kind"`
	Metadata   map[string]any `json:"metadata,omitempty"`
	Spec       struct {
		DatastoreType  string `json:"datastoreType,omitempty"`
		EtcdEndpoints  string `json:"etcdEndpoints,omitempty"`
		EtcdCACertFile string `json:"etcdCACertFile,omitempty"`
		EtcdCertFile   string `json:"etcdCertFile,omitempty"`
		EtcdKeyFile    string `json:"etcdKeyFile,omitempty"`
		// Known to calicoctl, refused here with a reason rather than as
		// unknown fields.
		EtcdUsername   string `json:"etcdUsername,omitempty"`
		EtcdPassword   string `json:"etcdPassword,omitempty"`
		EtcdCACert     string `json:"etcdCACert,omitempty"`
		EtcdCert       string `json:"etcdCert,omitempty"`
		EtcdKey        string `json:"etcdKey,omitempty"`
		EtcdDiscovery  string `json:"etcdDiscoverySrv,omitempty"`
		Kubeconfig     string `json:"kubeconfig,omitempty"`
		K8sAPIEndpoint string `json:"k8sAPIEndpoint,omitempty"`
	} `json:"spec"`
}

// parseConfigFile reads podnet's own FileConfig or, when the document
// names an apiVersion or kind, calicoctl's CalicoAPIConfig.
func parseConfigFile(data []byte) (datastore.Config, error) {
	var cfg datastore.Config
	var head struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
	}
	if err := yaml.Unmarshal(data, &head); err != nil {
		return cfg, err
	}
	if head.APIVersion == "" && head.Kind == "" {
		var fc FileConfig
		if err := yaml.UnmarshalStrict(data, &fc); err != nil {
			return cfg, err
		}
		for i, e := range fc.Datastore.Endpoints {
			e = strings.TrimSpace(e)
			if e == "" {
				return cfg, fmt.Errorf("datastore.endpoints[%d]: empty endpoint", i)
			}
			cfg.Endpoints = append(cfg.Endpoints, e)
		}
		cfg.CAFile, cfg.CertFile, cfg.KeyFile = fc.Datastore.CAFile, fc.Datastore.CertFile, fc.Datastore.KeyFile
		return cfg, nil
	}
	if head.Kind != "CalicoAPIConfig" || head.APIVersion != "projectcalico.org/v3" {
		return cfg, fmt.Errorf("apiVersion %q kind %q: want apiVersion projectcalico.org/v3, kind CalicoAPIConfig (calicoctl.cfg), or podnet's own file with a datastore: map", head.APIVersion, head.Kind)
	}
	var cc CalicoAPIConfig
	if err := yaml.UnmarshalStrict(data, &cc); err != nil {
		return cfg, err
	}
	s := cc.Spec
	switch s.DatastoreType {
	case "etcdv3":
	case "":
		return cfg, errors.New("spec.datastoreType is missing: podnet keeps its resources in etcd, set datastoreType: etcdv3")
	default:
		return cfg, fmt.Errorf("spec.datastoreType %q is not supported: podnet keeps its resources in etcd only (datastoreType: etcdv3), there is no Kubernetes API datastore", s.DatastoreType)
	}
	for _, f := range []struct{ name, val, why string }{
		{"etcdUsername", s.EtcdUsername, "etcd user authentication is not supported; use client certificates (etcdCertFile, etcdKeyFile)"},
		{"etcdPassword", s.EtcdPassword, "etcd user authentication is not supported; use client certificates (etcdCertFile, etcdKeyFile)"},
		{"etcdCACert", s.EtcdCACert, "inline certificates are not supported; put it in a file and give etcdCACertFile"},
		{"etcdCert", s.EtcdCert, "inline certificates are not supported; put it in a file and give etcdCertFile"},
		{"etcdKey", s.EtcdKey, "inline keys are not supported; put it in a file and give etcdKeyFile"},
		{"etcdDiscoverySrv", s.EtcdDiscovery, "DNS discovery is not supported; list the members in etcdEndpoints"},
		{"kubeconfig", s.Kubeconfig, "there is no Kubernetes API datastore"},
		{"k8sAPIEndpoint", s.K8sAPIEndpoint, "there is no Kubernetes API datastore"},
	} {
		if f.val != "" {
			return cfg, fmt.Errorf("spec.%s: %s", f.name, f.why)
		}
	}
	cfg.Endpoints = SplitEndpoints(s.EtcdEndpoints)
	cfg.CAFile, cfg.CertFile, cfg.KeyFile = s.EtcdCACertFile, s.EtcdCertFile, s.EtcdKeyFile
	return cfg, nil
}
