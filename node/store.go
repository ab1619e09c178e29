package node

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"time"
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
	var recs []PodRecord
	if err := json.Unmarshal(b, &recs); err != nil {
		return nil, fmt.Errorf("parse pod records %s: %w", s.path, err)
	}
	return recs, nil
}

func (s podStore) save(recs []PodRecord) error {
	b, err := json.MarshalIndent(recs, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(s.path), ".pods-*.json")
	if err != nil {
		return fmt.Errorf("save pod records: %w", err)
	}
	_, werr := tmp.Write(append(b, '\n'))
	serr := tmp.Sync()
	cerr := tmp.Close()
	if err := errors.Join(werr, serr, cerr); err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("save pod records: %w", err)
	}
	if err := os.Rename(tmp.Name(), s.path); err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("save pod records: %w", err)
	}
	return nil
}
