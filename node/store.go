package node

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"podnet/api"
)

// PodRecord is what the daemon remembers about a pod so that a restarted
// daemon can attach its persistent TAP again.
type PodRecord struct {
	Name  string     `json:"name"`
	IP    netip.Addr `json:"ip"`
	Netns string     `json:"netns"`
	// OwnsNetns is true when the daemon created the namespace (pod add
	// --new) and so deletes it with the pod.
	OwnsNetns bool `json:"ownsNetns,omitempty"`
	// Handle is the IPAM handle holding the pod's address.
	Handle  string    `json:"handle,omitempty"`
	MAC     string    `json:"mac"`
	Created time.Time `json:"created"`
	// State is "" for a pod the node has, else what a daemon restarted
	// in the middle must finish: recAdding or recDeleting.
	State string `json:"state,omitempty"`
}

// PodRecord.State values.
const (
	// recAdding: an add was under way (written before the address is
	// allocated); a restarted daemon rolls it back.
	recAdding = "adding"
	// recDeleting: a delete was under way, or its address release
	// waits for the datastore; a restarted daemon finishes it.
	recDeleting = "deleting"
)

// crashAt names the step at which the daemon kills itself
// (PODNET_TEST_CRASH_AT: add-intent, add-alloc, add-link, add-wep,
// add-done, del-start, del-local). Test-only: the lab's crash tests use it to
// check that a restarted daemon recovers from a death at each step of
// pod add and delete. Unset, as in real use, it does nothing.
var crashAt = os.Getenv("PODNET_TEST_CRASH_AT")

// pauseAt names a step at which the daemon waits pauseFor
// (PODNET_TEST_PAUSE_AT, PODNET_TEST_PAUSE_FOR, a Go duration, 5 s if
// unset or bad). Test-only, like crashAt: a request caught half-way, for
// as long as a test needs, with no race against the datastore's health.
var (
	pauseAt  = os.Getenv("PODNET_TEST_PAUSE_AT")
	pauseFor = envDuration("PODNET_TEST_PAUSE_FOR", 5*time.Second)
)

func envDuration(name string, def time.Duration) time.Duration {
	d, err := time.ParseDuration(os.Getenv(name))
	if err != nil || d <= 0 {
		return def
	}
	return d
}

// crashPoint kills the daemon on the spot (SIGKILL: no deferred
// cleanup, as in a real crash) when step is crashAt, and waits pauseFor
// when step is pauseAt.
func crashPoint(step string) {
	if crashAt != "" && crashAt == step {
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {} // the signal is on its way
	}
	if pauseAt != "" && pauseAt == step {
		time.Sleep(pauseFor)
	}
}

// podStore keeps the pod records in one JSON file in the state dir,
// replaced atomically on every change.
type podStore struct {
	path string
}

func (s podStore) load() ([]PodRecord, error) {
	b, err := os.ReadFile(s.path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read pod records: %w", err)
	}
	recs, err := parsePodRecords(b)
	if err != nil {
		return nil, fmt.Errorf("pod records %s: %w", s.path, err)
	}
	return recs, nil
}

// parsePodRecords decodes pods.json and checks every record, so that a
// damaged or hand-edited file stops the daemon with the record and field
// at fault instead of attaching a TAP in the wrong place: a DNS-label
// name used once, an IPv4 pod address used once (none yet only in an
// add's intent, written before the address is allocated), a clean
// absolute netns path, a known state.
func parsePodRecords(b []byte) ([]PodRecord, error) {
	var recs []PodRecord
	if err := json.Unmarshal(b, &recs); err != nil {
		return nil, fmt.Errorf("parse: %w", err)
	}
	names := make(map[string]bool, len(recs))
	ips := make(map[netip.Addr]string, len(recs))
	for i, r := range recs {
		switch {
		case !podNameRE.MatchString(r.Name):
			return nil, fmt.Errorf("record %d: name %q is not a DNS label", i, r.Name)
		case names[r.Name]:
			return nil, fmt.Errorf("record %d: pod %s recorded twice", i, r.Name)
		case r.IP.IsValid() && (!r.IP.Is4() || api.ValidatePodIPv4(r.IP) != nil),
			!r.IP.IsValid() && r.State != recAdding: // only an add's intent precedes its address
			return nil, fmt.Errorf("record %d (pod %s): ip %v is not a pod IPv4 address", i, r.Name, r.IP)
		case r.IP.IsValid() && ips[r.IP] != "":
			return nil, fmt.Errorf("record %d (pod %s): ip %v is also pod %s's", i, r.Name, r.IP, ips[r.IP])
		case !filepath.IsAbs(r.Netns) || filepath.Clean(r.Netns) != r.Netns:
			return nil, fmt.Errorf("record %d (pod %s): netns %q is not a clean absolute path", i, r.Name, r.Netns)
		case r.State != "" && r.State != recAdding && r.State != recDeleting:
			return nil, fmt.Errorf("record %d (pod %s): unknown state %q", i, r.Name, r.State)
		}
		names[r.Name] = true
		if r.IP.IsValid() {
			ips[r.IP] = r.Name
		}
	}
	return recs, nil
}

func (s podStore) save(recs []PodRecord) error {
	b, err := json.MarshalIndent(recs, "", "  ")
	if err != nil {
		return err
	}
	if err := writeFileAtomic(s.path, append(b, '\n')); err != nil {
		return fmt.Errorf("save pod records: %w", err)
	}
	return nil
}

// writeFileAtomic replaces path with b, synced: a crash leaves the old
// file or the new one, never half of one, and once it returns, the new
// one.
func writeFileAtomic(path string, b []byte) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+"-*")
	if err != nil {
		return err
	}
	_, werr := tmp.Write(b)
	serr := tmp.Sync()
	cerr := tmp.Close()
	if err := errors.Join(werr, serr, cerr); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	// The rename is in the directory: until that is synced, a power cut
	// can bring the old file back.
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	serr = d.Sync()
	d.Close()
	if serr != nil {
		return fmt.Errorf("sync %s: %w", dir, serr)
	}
	return nil
}
