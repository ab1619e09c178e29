package main

import (
	"strings"
	"testing"
)

// TestApplyRefusesReservedPools: Calico YAML through podnet apply (one
// embedded etcd): a loopback pool and a pool on a node's underlay subnet
// are refused with the field named, and nothing is written.
func TestApplyRefusesReservedPools(t *testing.T) {
	c := newCLI(t)
	calicoPool := func(name, cidr string) string {
		return "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: " + name +
			"\nspec:\n  cidr: " + cidr + "\n  ipipMode: Always\n  natOutgoing: true\n"
	}
	c.fails("error with field IPPool.Spec.CIDR = '127.0.0.0/24' (IPPool CIDR overlaps with the loopback range 127.0.0.0/8)",
		calicoPool("loop", "127.0.0.0/24"), "apply", "-f", "-")
	c.fails("error with field IPPool.Spec.CIDR = '224.1.0.0/24' (IPPool CIDR overlaps with the multicast range 224.0.0.0/4)",
		calicoPool("mcast", "224.1.0.0/24"), "create", "-f", "-")
	c.fails("IPPool CIDR is too broad: the prefix length must be at least /8",
		calicoPool("wide", "0.0.0.0/1"), "apply", "-f", "-")

	c.ok("apiVersion: projectcalico.org/v3\nkind: Node\nmetadata:\n  name: worker1\nspec:\n  bgp:\n    ipv4Address: 10.77.0.11/24\n", "apply", "-f", "-")
	c.fails("error with field IPPool.Spec.CIDR = '10.77.0.0/24' (IPPool(under) CIDR overlaps with the underlay subnet 10.77.0.0/24 of Node(worker1) (spec.bgp.ipv4Address 10.77.0.11/24))",
		calicoPool("under", "10.77.0.0/24"), "apply", "-f", "-")
	// In a multi-document file the bad pool stops the good one too.
	c.fails("IPPool(loop2): error with field IPPool.Spec.CIDR = '127.0.0.0/16'",
		calicoPool("good", "10.20.0.0/16")+"---\n"+calicoPool("loop2", "127.0.0.0/16"), "apply", "-f", "-")

	c.ok(calicoPool("good", "10.20.0.0/16"), "apply", "-f", "-")
	// Only the good pool is stored.
	if out := c.ok("", "get", "ippools"); strings.Count(out, "\n") != 2 || !strings.Contains(out, "good ") {
		t.Fatalf("pools stored after the refusals:\n%s", out)
	}
}
