package node

import (
	"fmt"
	"os"
	"strings"
	"testing"
)

// TestNetnsTaken: a namespace is taken while another pod is being added
// to it or deleted from it, by any path to it, and while a ready pod's
// record names the same path; not once a pod's delete is done here.
func TestNetnsTaken(t *testing.T) {
	self := netnsIDOf("/proc/self/ns/net")
	if self == (netnsID{}) || netnsIDOf(fmt.Sprintf("/proc/%d/ns/net", os.Getpid())) != self {
		t.Fatalf("netnsIDOf: /proc/self/ns/net is %v, not the same as by the pid", self)
	}
	s := newState()
	add := func(name, path string, phase podPhase, id netnsID) {
		s.pods[name] = &pod{rec: PodRecord{Name: name, Netns: path}, phase: phase, netns: id}
	}
	add("adding", "/run/netns/a", podAdding, netnsID{1, 10})
	add("deleting", "/run/netns/d", podDeleting, netnsID{1, 11})
	add("ready", "/run/netns/r", podReady, netnsID{1, 12})
	add("released", "/run/netns/x", podReleasing, netnsID{1, 13})
	for _, tt := range []struct {
		path string
		id   netnsID
		want string // "" = free
	}{
		{"/run/netns/a", netnsID{}, "pod adding, being added"},
		{"/proc/7/ns/net", netnsID{1, 10}, "pod adding, being added"},
		{"/run/netns//d", netnsID{}, "pod deleting's, being deleted"},
		{"/proc/8/ns/net", netnsID{1, 11}, "pod deleting's, being deleted"},
		{"/run/netns/r", netnsID{1, 99}, "pod ready's"},
		{"/proc/9/ns/net", netnsID{1, 12}, ""}, // a number reused after the ready pod's namespace went
		{"/run/netns/x", netnsID{1, 13}, ""},
		{"/run/netns/new", netnsID{1, 14}, ""},
	} {
		err := netnsTaken(s, "new", tt.path, tt.id)
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("%s %v: %v, want free", tt.path, tt.id, err)
		case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("%s %v: %v, want taken by %s", tt.path, tt.id, err, tt.want)
		}
	}
}
