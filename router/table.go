package router

import (
	"fmt"
	"net/netip"
	"slices"
	"sync/atomic"

	"github.com/gaissmai/bart"
)

// Table is an immutable longest-prefix-match table. Build one with
// NewTable; never modify it after it is published.
type Table struct {
	lpm    bart.Table[*Route]
	routes []Route // sorted by prefix, for listing
}

// NewTable builds a table from routes. A prefix given twice is an error:
// the control plane must decide which route wins before building.
func NewTable(routes []Route) (*Table, error) {
	t := &Table{routes: make([]Route, len(routes))}
	copy(t.routes, routes)
	slices.SortFunc(t.routes, func(a, b Route) int { return comparePrefix(a.Prefix, b.Prefix) })
	for i := range t.routes {
		r := &t.routes[i]
		if !r.Prefix.IsValid() {
			return nil, fmt.Errorf("route %d: invalid prefix", i)
		}
		if r.Prefix != r.Prefix.Masked() {
			return nil, fmt.Errorf("route %s: prefix has host bits set", r.Prefix)
		}
		if _, dup := t.lpm.Get(r.Prefix); dup {
			return nil, fmt.Errorf("route %s: duplicate prefix", r.Prefix)
		}
		t.lpm.Insert(r.Prefix, r)
	}
	return t, nil
}

// Lookup returns the most specific route containing addr.
// It does not allocate.
func (t *Table) Lookup(addr netip.Addr) (*Route, bool) {
	return t.lpm.Lookup(addr)
}

// Routes returns a copy of the routes, sorted by prefix.
func (t *Table) Routes() []Route { return slices.Clone(t.routes) }

// Len is the number of routes.
func (t *Table) Len() int { return len(t.routes) }

func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}

// Snapshot publishes tables to the data path. Readers Load once per batch;
// the single writer Stores a freshly built table. The zero value holds an
// empty table.
type Snapshot struct {
	p atomic.Pointer[Table]
}

var emptyTable = &Table{}

// Load returns the current table; never nil.
func (s *Snapshot) Load() *Table {
	if t := s.p.Load(); t != nil {
		return t
	}
	return emptyTable
}

// Store publishes t.
func (s *Snapshot) Store(t *Table) { s.p.Store(t) }
