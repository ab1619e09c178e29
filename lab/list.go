package lab

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
)

// List returns the names of the labs that are up in the default run root
// (those with a state.json), sorted. No lab at all is an empty list, not
// an error.
func List() ([]string, error) {
	ents, err := os.ReadDir(DefaultRunRoot)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list labs in %s: %w", DefaultRunRoot, err)
	}
	var names []string
	for _, e := range ents {
		if !e.IsDir() || ValidateName(e.Name()) != nil {
			continue
		}
		if _, err := os.Stat(filepath.Join(DefaultRunRoot, e.Name(), stateFile)); err == nil {
			names = append(names, e.Name())
		}
	}
	sort.Strings(names)
	return names, nil
}

// Env returns the environment a shell on the host needs to use podnet's
// resource and IPAM commands on this lab, and node commands on node
// ("" = the lab's first node), as KEY=VALUE pairs in a fixed order.
func (l *Lab) Env(node string) ([]string, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	env := []string{"PODNET_LAB=" + l.st.Name}
	if ds := l.st.datastore(); ds != "" {
		env = append(env, datastoreEnv+"="+ds)
	}
	if node == "" && len(l.st.Nodes) > 0 {
		node = l.st.Nodes[0].Name
	}
	if node != "" {
		n := l.st.node(node)
		if n == nil {
			return nil, l.unknownNodeLocked(node)
		}
		if !l.st.NoDaemon {
			env = append(env, "PODNET_SOCKET="+n.Socket)
		}
	}
	return env, nil
}

func (l *Lab) unknownNodeLocked(node string) error {
	var names []string
	for _, n := range l.st.Nodes {
		names = append(names, n.Name)
	}
	return fmt.Errorf("lab %s has no node %q (nodes: %v)", l.st.Name, node, names)
}
