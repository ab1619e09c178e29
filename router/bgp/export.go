package bgp

import (
	"context"
	"fmt"
	"net/netip"
	"slices"

	api "github.com/osrg/gobgp/v4/api"
)

// Names of the export policy's parts inside GoBGP.
const (
	exportPrefixSet = "podnet-export-prefixes"
	exportPolicy    = "podnet-export"
)

// SetExportFilter makes the speaker pass on to its peers only paths whose
// prefix lies within one of within (the prefix itself or a longer one):
// what it learned from one peer and would otherwise advertise to another
// (to eBGP neighbours, and as a route reflector to its clients), and its
// own advertisements. Nil or empty passes nothing on. Until it is first
// called the speaker passes on everything, as GoBGP does by default.
//
// A node gives its IP pools here (Calico's export filter to BGP peers
// accepts pool prefixes only): so a path a hostile peer announced, say
// 0.0.0.0/1, or a ToR's routes learned in one session, never leave this
// speaker again, and the node is no transit between its neighbours.
// Calling it again with the same set does nothing; a changed set is
// applied to the established sessions at once (a soft reset out).
func (s *Speaker) SetExportFilter(ctx context.Context, within []netip.Prefix) error {
	want := make([]netip.Prefix, 0, len(within))
	for _, p := range within {
		if !p.IsValid() || !p.Addr().Is4() {
			return fmt.Errorf("bgp: export filter: %v is not an IPv4 prefix", p)
		}
		want = append(want, p.Masked())
	}
	slices.SortFunc(want, func(a, b netip.Prefix) int {
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return a.Bits() - b.Bits()
	})
	want = slices.Compact(want)

	s.opMu.Lock()
	defer s.opMu.Unlock()
	if s.closed {
		return ErrClosed
	}
	if s.exportSet && slices.Equal(s.export, want) {
		return nil
	}
	assign := &api.PolicyAssignment{Name: "global", Direction: api.PolicyDirection_POLICY_DIRECTION_EXPORT,
		DefaultAction: api.RouteAction_ROUTE_ACTION_REJECT}
	if len(want) > 0 {
		// The policy holds GoBGP's prefix set itself: the set is changed
		// in place (prefixes added and removed), never replaced, or the
		// policy would go on matching the old one.
		var added, removed []netip.Prefix
		for _, p := range want {
			if !slices.Contains(s.exportHeld, p) {
				added = append(added, p)
			}
		}
		for _, p := range s.exportHeld {
			if !slices.Contains(want, p) {
				removed = append(removed, p)
			}
		}
		if len(added) > 0 {
			if err := s.srv.AddDefinedSet(ctx, &api.AddDefinedSetRequest{DefinedSet: exportSet(added)}); err != nil {
				return fmt.Errorf("bgp: export filter: prefix set: %w", err)
			}
		}
		if len(removed) > 0 {
			if err := s.srv.DeleteDefinedSet(ctx, &api.DeleteDefinedSetRequest{DefinedSet: exportSet(removed)}); err != nil {
				return fmt.Errorf("bgp: export filter: prefix set: %w", err)
			}
		}
		if !s.exportPolicy {
			pol := &api.Policy{Name: exportPolicy, Statements: []*api.Statement{{
				Name:       exportPolicy + "-within",
				Conditions: &api.Conditions{PrefixSet: &api.MatchSet{Type: api.MatchSet_TYPE_ANY, Name: exportPrefixSet}},
				Actions:    &api.Actions{RouteAction: api.RouteAction_ROUTE_ACTION_ACCEPT},
			}}}
			if err := s.srv.AddPolicy(ctx, &api.AddPolicyRequest{Policy: pol}); err != nil && !s.hasPolicy(ctx, exportPolicy) {
				// (An error after GoBGP added it after all would otherwise
				// make every later call fail with "already exists".)
				return fmt.Errorf("bgp: export filter: policy: %w", err)
			}
			s.exportPolicy = true
		}
		s.exportHeld = want
		assign.Policies = []*api.Policy{{Name: exportPolicy}}
	}
	// With no prefix the assignment is the default alone: reject.
	if err := s.srv.SetPolicyAssignment(ctx, &api.SetPolicyAssignmentRequest{Assignment: assign}); err != nil {
		return fmt.Errorf("bgp: export filter: assignment: %w", err)
	}
	s.export, s.exportSet = want, true
	if len(s.peers) == 0 {
		return nil
	}
	// Sessions already up were sent what the old filter let through.
	if err := s.srv.ResetPeer(ctx, &api.ResetPeerRequest{Address: "all", Soft: true, Direction: api.ResetPeerRequest_DIRECTION_OUT}); err != nil {
		return fmt.Errorf("bgp: export filter: apply to sessions: %w", err)
	}
	return nil
}

// exportSet is the export prefix set holding ps and every longer prefix
// inside them.
func exportSet(ps []netip.Prefix) *api.DefinedSet {
	set := &api.DefinedSet{DefinedType: api.DefinedType_DEFINED_TYPE_PREFIX, Name: exportPrefixSet}
	for _, p := range ps {
		set.Prefixes = append(set.Prefixes, &api.Prefix{IpPrefix: p.String(), MaskLengthMin: uint32(p.Bits()), MaskLengthMax: 32})
	}
	return set
}

// hasPolicy says whether GoBGP holds a policy of that name.
func (s *Speaker) hasPolicy(ctx context.Context, name string) bool {
	found := false
	err := s.srv.ListPolicy(ctx, &api.ListPolicyRequest{Name: name}, func(p *api.Policy) {
		found = found || p.GetName() == name
	})
	return err == nil && found
}
