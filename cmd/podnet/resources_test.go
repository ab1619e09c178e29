package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"podnet/api"
	"podnet/datastore"
)

// cli runs the resource verbs in-process against one embedded etcd.
type cli struct {
	t        *testing.T
	endpoint string
}

func newCLI(t *testing.T) *cli {
	t.Helper()
	e, err := datastore.StartEmbedded(datastore.EmbedConfig{Dir: t.TempDir(), UnsafeNoFsync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	// Keep a real config file or environment of the machine out of it.
	t.Setenv("PODNET_CONFIG", filepath.Join(t.TempDir(), "podnet.cfg"))
	os.WriteFile(os.Getenv("PODNET_CONFIG"), []byte("datastore: {}\n"), 0o600)
	t.Setenv("PODNET_DATASTORE_ENDPOINTS", "")
	return &cli{t: t, endpoint: e.Endpoints()[0]}
}

// run runs "podnet ARGS..." with stdin and returns stdout and the error
// main would print.
func (c *cli) run(stdin string, args ...string) (string, error) {
	c.t.Helper()
	root := &cobra.Command{Use: "podnet", SilenceUsage: true, SilenceErrors: true}
	root.AddCommand(newGetCmd(), newCreateCmd(), newApplyCmd(), newReplaceCmd(), newDeleteCmd(), newPatchCmd(), newLabelCmd())
	var out, errOut bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetIn(strings.NewReader(stdin))
	root.SetArgs(append(args, "--datastore", c.endpoint))
	err := root.ExecuteContext(context.Background())
	return out.String(), err
}

// ok runs a command that must succeed and returns its stdout.
func (c *cli) ok(stdin string, args ...string) string {
	c.t.Helper()
	out, err := c.run(stdin, args...)
	if err != nil {
		c.t.Fatalf("podnet %s: %v", strings.Join(args, " "), err)
	}
	return out
}

// fails runs a command that must fail with an error containing want.
func (c *cli) fails(want, stdin string, args ...string) {
	c.t.Helper()
	_, err := c.run(stdin, args...)
	if err == nil || !strings.Contains(err.Error(), want) {
		c.t.Fatalf("podnet %s: got error %v, want %q", strings.Join(args, " "), err, want)
	}
}

func wantOut(t *testing.T, got, want string) {
	t.Helper()
	if got != want {
		t.Fatalf("got output\n%s\nwant\n%s", got, want)
	}
}

const newPoolYAML = `apiVersion: podnet.io/v1
kind: IPPool
metadata:
  name: new-pool
spec:
  cidr: 10.10.0.0/16
  ipipMode: Always
  natOutgoing: true
`

// TestResourceWalk is the seed's walk: pools created, disabled by patch
// and by get/edit/apply, overlap and stale writes refused, a bad
// document in a multi-document apply writes nothing, Calico YAML works.
func TestResourceWalk(t *testing.T) {
	c := newCLI(t)
	var def bytes.Buffer
	api.Encode(&def, []api.Resource{api.DefaultIPPool()}, api.FormatYAML)
	wantOut(t, c.ok(def.String(), "create", "-f", "-"), "Successfully created 1 'IPPool' resource(s)\n")

	file := filepath.Join(t.TempDir(), "new-pool.yaml")
	os.WriteFile(file, []byte(newPoolYAML), 0o644)
	wantOut(t, c.ok("", "create", "-f", file), "Successfully created 1 'IPPool' resource(s)\n")
	c.fails("resource already exists: IPPool(new-pool)", "", "create", "-f", file)

	wantOut(t, c.ok("", "get", "ippool"), "NAME                  CIDR             SELECTOR\n"+
		"default-ipv4-ippool   192.168.0.0/16   all()\n"+
		"new-pool              10.10.0.0/16     all()\n")
	wantOut(t, c.ok("", "get", "pools", "-o", "wide"), "NAME                  CIDR             NAT    IPIPMODE   VXLANMODE   DISABLED   DISABLEBGPEXPORT   SELECTOR   ASSIGNMENTMODE\n"+
		"default-ipv4-ippool   192.168.0.0/16   true   Never      Never       false      false              all()      Automatic\n"+
		"new-pool              10.10.0.0/16     true   Always     Never       false      false              all()      Automatic\n")

	// Disable the default pool with a patch.
	wantOut(t, c.ok("", "patch", "ippool", "default-ipv4-ippool", "-p", `{"spec":{"disabled":true}}`), "Successfully patched 1 'IPPool' resource\n")
	if y := c.ok("", "get", "ippool", "default-ipv4-ippool", "-o", "yaml"); !strings.Contains(y, "  disabled: true\n") || !strings.HasPrefix(y, "apiVersion: podnet.io/v1\nkind: IPPool\n") {
		t.Fatalf("after patch:\n%s", y)
	}
	c.ok("", "patch", "ippool", "default-ipv4-ippool", "-p", `{"spec":{"disabled":null}}`)

	// ... and again by get -o yaml, edit, apply.
	y := c.ok("", "get", "ippool", "default-ipv4-ippool", "-o", "yaml")
	if strings.Contains(y, "disabled") {
		t.Fatalf("still disabled:\n%s", y)
	}
	edited := strings.Replace(y, "  cidr: 192.168.0.0/16\n", "  cidr: 192.168.0.0/16\n  disabled: true\n", 1)
	wantOut(t, c.ok(edited, "apply", "-f", "-"), "Successfully applied 1 'IPPool' resource(s)\n")
	if y := c.ok("", "get", "ippool", "default-ipv4-ippool", "-o", "json"); !strings.Contains(y, `"disabled": true`) {
		t.Fatalf("after apply:\n%s", y)
	}
	// The same file again carries a stale resourceVersion.
	c.fails("update conflict: IPPool(default-ipv4-ippool)", edited, "apply", "-f", "-")

	// Overlap refused.
	c.fails("error with field IPPool.Spec.CIDR = '10.10.64.0/18' (IPPool(overlap) CIDR overlaps with IPPool(new-pool) CIDR 10.10.0.0/16)",
		strings.NewReplacer("new-pool", "overlap", "10.10.0.0/16", "10.10.64.0/18").Replace(newPoolYAML), "apply", "-f", "-")

	// get -o yaml > f; apply -f f round-trips.
	all := c.ok("", "get", "ippool", "-o", "yaml")
	wantOut(t, c.ok(all, "apply", "-f", "-"), "Successfully applied 2 'IPPool' resource(s)\n")
	after := c.ok("", "get", "ippool", "-o", "yaml")
	if strip := func(s string) string {
		var keep []string
		for _, l := range strings.Split(s, "\n") {
			if !strings.Contains(l, "resourceVersion:") {
				keep = append(keep, l)
			}
		}
		return strings.Join(keep, "\n")
	}; strip(all) != strip(after) {
		t.Fatalf("round trip changed the pools:\n%s\nthen\n%s", all, after)
	}

	// A multi-document apply with one invalid document writes nothing.
	multi := strings.Replace(newPoolYAML, "new-pool", "third", 1)
	multi = strings.Replace(multi, "10.10.0.0/16", "10.30.0.0/16", 1) + "---\n" +
		"apiVersion: podnet.io/v1\nkind: IPPool\nmetadata: {name: broken}\nspec: {cidr: 10.31.0.1/16}\n"
	c.fails("failed to apply any 'IPPool' resources: [IPPool(broken): error with field IPPool.Spec.CIDR = '10.31.0.1/16' (IPPool CIDR is not strictly masked)]", multi, "apply", "-f", "-")
	c.fails("resource does not exist: IPPool(third)", "", "get", "ippool", "third")
	c.fails("document 2: field in document is not recognized or is in the wrong location: spec.ipipmode",
		newPoolYAML+"---\napiVersion: podnet.io/v1\nkind: IPPool\nmetadata: {name: x}\nspec: {cidr: 10.40.0.0/16, ipipmode: Always}\n", "apply", "-f", "-")

	// Calico's own YAML is accepted, and printed back as Calico's.
	calico := "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: calico-pool\nspec:\n  cidr: 172.20.0.0/16\n  ipipMode: CrossSubnet\n  natOutgoing: true\n  nodeSelector: all()\n"
	wantOut(t, c.ok(calico, "create", "-f", "-"), "Successfully created 1 'IPPool' resource(s)\n")
	if y := c.ok("", "get", "ipp", "calico-pool", "-o", "yaml"); !strings.HasPrefix(y, "apiVersion: projectcalico.org/v3\n") || !strings.Contains(y, "ipipMode: CrossSubnet") {
		t.Fatalf("calico pool:\n%s", y)
	}

	// Replace, delete by name and by file.
	c.fails("resource does not exist: IPPool(nope)", strings.Replace(newPoolYAML, "new-pool", "nope", 1), "replace", "-f", "-")
	wantOut(t, c.ok(strings.Replace(newPoolYAML, "natOutgoing: true", "natOutgoing: false", 1), "replace", "-f", "-"), "Successfully replaced 1 'IPPool' resource(s)\n")
	wantOut(t, c.ok("", "delete", "ippool", "calico-pool"), "Successfully deleted 1 'IPPool' resource(s)\n")
	wantOut(t, c.ok(newPoolYAML, "delete", "-f", "-"), "Successfully deleted 1 'IPPool' resource(s)\n")
	c.fails("resource does not exist: IPPool(new-pool)", "", "delete", "pool", "new-pool")
	c.fails("resource does not exist: IPPool(calico-pool)", "", "get", "ippool", "calico-pool")
}

func TestResourceCLIOther(t *testing.T) {
	c := newCLI(t)
	nodes := `apiVersion: podnet.io/v1
kind: Node
metadata: {name: worker1}
spec:
  bgp: {ipv4Address: 10.0.0.11/24}
---
apiVersion: projectcalico.org/v3
kind: Node
metadata: {name: worker2}
spec:
  bgp: {ipv4Address: 10.0.0.12/24, asNumber: 64513}
---
apiVersion: podnet.io/v1
kind: BGPPeer
metadata: {name: tor}
spec: {peerIP: 192.20.30.40, asNumber: 64567}
`
	wantOut(t, c.ok(nodes, "apply", "-f", "-"), "Successfully applied 3 resource(s)\n")
	wantOut(t, c.ok("", "get", "nodes", "-o", "wide"), "NAME      ASN       IPV4           IPV6   VXLANMAC   PODMTU\nworker1   (64512)   10.0.0.11/24\nworker2   64513     10.0.0.12/24\n")
	wantOut(t, c.ok("", "get", "no"), "NAME\nworker1\nworker2\n")
	// calicoctl's -o ps is the table, and so is -o table.
	wantOut(t, c.ok("", "get", "no", "-o", "ps"), "NAME\nworker1\nworker2\n")
	wantOut(t, c.ok("", "get", "no", "-o", "table"), "NAME\nworker1\nworker2\n")
	c.ok("apiVersion: podnet.io/v1\nkind: BGPConfiguration\nmetadata: {name: default}\nspec: {asNumber: 65000}\n", "create", "-f", "-")
	wantOut(t, c.ok("", "get", "bgpconfig"), "NAME      LOGSEVERITY   MESHENABLED   ASNUMBER\ndefault   Info          true          65000\n")
	wantOut(t, c.ok("", "get", "node", "-o", "wide"), "NAME      ASN       IPV4           IPV6   VXLANMAC   PODMTU\nworker1   (65000)   10.0.0.11/24\nworker2   64513     10.0.0.12/24\n")
	wantOut(t, c.ok("", "get", "bgpp", "-o", "wide"), "NAME   PEERIP         NODE       ASN\ntor    192.20.30.40   (global)   64567\n")
	c.ok("", "patch", "node", "worker1", "-p", `{"spec":{"bgp":{"routeReflectorClusterID":"244.0.0.1"}}}`)

	wantOut(t, c.ok("", "label", "node", "worker1", "route-reflector=true"), "Successfully set label route-reflector on node worker1\n")
	c.fails("key route-reflector is already present", "", "label", "node", "worker1", "route-reflector=false")
	c.ok("", "label", "node", "worker1", "route-reflector=false", "--overwrite")
	if y := c.ok("", "get", "node", "worker1", "-o", "yaml"); !strings.Contains(y, "route-reflector: \"false\"") || !strings.Contains(y, "routeReflectorClusterID: 244.0.0.1") {
		t.Fatalf("labelled node:\n%s", y)
	}
	wantOut(t, c.ok("", "label", "node", "worker1", "route-reflector", "--remove"), "Successfully removed label route-reflector from node worker1\n")

	c.fails("resource type 'foo' is not supported; the kinds podnet knows", "", "get", "foo")
	c.fails("resource type 'foo' is not supported; the kinds podnet knows", "", "delete", "foo", "x")
	c.fails("resource type 'foo' is not supported; the kinds podnet knows", "", "label", "foo", "x", "a=b")
	c.fails("No resources specified", "# empty\n", "apply", "-f", "-")
	c.fails(`Failed to execute command: document 1: unknown kind "Foo"`, "apiVersion: podnet.io/v1\nkind: Foo\n", "create", "-f", "-")
	c.fails("unknown output format", "", "get", "node", "-o", "xml")
}

func TestResourceCLIUnreachable(t *testing.T) {
	t.Setenv("PODNET_CONFIG", filepath.Join(t.TempDir(), "none.cfg"))
	os.WriteFile(os.Getenv("PODNET_CONFIG"), []byte("datastore: {}\n"), 0o600)
	c := &cli{t: t, endpoint: "unix://" + filepath.Join(t.TempDir(), "no.sock")}
	c.fails("Failed to create podnet API client: etcd at unix://", "", "get", "ippool")
}

// TestResourceCLICalico: Calico's documents, as a user migrating with
// calicoctl habits would give them.
func TestResourceCLICalico(t *testing.T) {
	c := newCLI(t)
	pool := `apiVersion: projectcalico.org/v3
kind: IPPool
metadata:
  name: west
spec:
  cidr: 10.20.0.0/16
  nodeSelector: zone == 'west'
`
	c.ok(pool, "apply", "-f", "-")
	// Written as Calico's, printed as Calico's: calicoctl reads it back.
	y := c.ok("", "get", "ippool", "west", "-o", "yaml")
	if !strings.HasPrefix(y, "apiVersion: projectcalico.org/v3\nkind: IPPool\n") {
		t.Fatalf("get -o yaml:\n%s", y)
	}
	if y := c.ok("", "get", "ippools", "-o", "yaml"); !strings.HasPrefix(y, "apiVersion: projectcalico.org/v3\nitems:\n- apiVersion: projectcalico.org/v3\n") {
		t.Fatalf("get (list) -o yaml:\n%s", y)
	}
	if j := c.ok("", "get", "ippool", "west", "-o", "json", "--api-version", "podnet.io/v1"); !strings.Contains(j, `"apiVersion": "podnet.io/v1"`) {
		t.Fatalf("--api-version podnet.io/v1:\n%s", j)
	}
	c.ok("apiVersion: podnet.io/v1\nkind: BGPPeer\nmetadata: {name: tor}\nspec: {peerIP: 192.20.30.40, asNumber: 64567}\n", "apply", "-f", "-")
	if y := c.ok("", "get", "bgppeer", "tor", "-o", "yaml", "--api-version", "projectcalico.org/v3"); !strings.HasPrefix(y, "apiVersion: projectcalico.org/v3\n") {
		t.Fatalf("--api-version projectcalico.org/v3:\n%s", y)
	}
	c.fails("--api-version needs -o yaml or -o json", "", "get", "ippool", "--api-version", "podnet.io/v1")
	c.fails(`--api-version: unknown apiVersion "v3"`, "", "get", "ippool", "-o", "yaml", "--api-version", "v3")

	// The default BGPConfiguration stays.
	c.ok("apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata: {name: default}\nspec: {asNumber: 63400}\n", "apply", "-f", "-")
	c.fails("operation Delete is not supported on BGPConfiguration(default)", "", "delete", "bgpconfig", "default")
	wantOut(t, c.ok("", "get", "bgpconfig"), "NAME      LOGSEVERITY   MESHENABLED   ASNUMBER\ndefault   Info          true          63400\n")

	// Refusals that say podnet does not support it, not that it is a typo.
	c.fails("podnet does not support BGPPeer field spec.password.secretKeyRef (yet): Kubernetes secrets are not available; give the password with password.secretFile",
		"apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {name: p}\nspec:\n  peerIP: 192.20.30.40\n  asNumber: 64567\n  password:\n    secretKeyRef: {name: bgp-secrets, key: rr-password}\n", "apply", "-f", "-")
	c.fails("podnet does not support kind BGPFilter (yet)", "apiVersion: projectcalico.org/v3\nkind: BGPFilter\nmetadata: {name: f}\nspec: {}\n", "apply", "-f", "-")
	c.fails("podnet does not support IPv6 BGP peers yet", "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {name: v6}\nspec: {peerIP: '[ac13::57]:50', asNumber: 64567}\n", "apply", "-f", "-")
	c.fails("IPPool.Spec.NodeSelector = 'zone = west' (invalid selector at position 6",
		"apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: bad}\nspec: {cidr: 10.30.0.0/16, nodeSelector: zone = west}\n", "apply", "-f", "-")
	c.fails("metadata.labels.x: label and annotation values are strings, got the boolean true; quote it: 'true'",
		"apiVersion: projectcalico.org/v3\nkind: Node\nmetadata:\n  name: w\n  labels: {x: true}\n", "apply", "-f", "-")
	// Calico's IPAMConfiguration sample.
	c.ok("apiVersion: projectcalico.org/v3\nkind: IPAMConfiguration\nmetadata: {name: default}\nspec: {strictAffinity: false, maxBlocksPerHost: 4}\n", "apply", "-f", "-")
	wantOut(t, c.ok("", "get", "ipamconfig"), "NAME      STRICTAFFINITY   MAXBLOCKSPERHOST\ndefault   false            4\n")
}
