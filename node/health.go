package node

import (
	"context"
	"fmt"
	"time"

	"podnet/nodeapi"
)

// The daemon's link to the datastore, as the API reports it. The data
// path needs no datastore: while etcd is unreachable the node forwards
// for the pods it has, refuses pod add at once (it needs IPAM), queues
// the address releases of deleted pods, and reconnects by itself.

const (
	// probeInterval is how often the datastore goroutine asks etcd
	// whether it answers; probeTimeout bounds one question.
	probeInterval = 2 * time.Second
	probeTimeout  = 2 * time.Second
	probeFailures = 2
	// recheckTimeout bounds requireDatastore's second look.
	recheckTimeout = time.Second
	// firstContactTimeout bounds the start's datastore work (default
	// pool, Node resource): past it the node starts without etcd.
	firstContactTimeout = 5 * time.Second
	// retryInterval paces the retries of work that failed on etcd
	// (registering the node, granting the liveness lease).
	retryInterval = 2 * time.Second
)

// dsHealth is what the node knows of etcd; set whole, read whole.
type dsHealth struct {
	reachable bool
	since     time.Time
	err       string
}

// setHealth records the outcome of a talk with etcd (err nil: it
// answered) and logs each change.
func (n *Node) setHealth(err error) {
	old := n.health.Load()
	reachable := err == nil
	if old != nil && old.reachable == reachable {
		return
	}
	h := &dsHealth{reachable: reachable, since: time.Now()}
	if err != nil {
		h.err = err.Error()
	}
	if !n.health.CompareAndSwap(old, h) {
		return // another report won; it says the same or newer
	}
	if reachable {
		n.reachableEpoch.Add(1)
		if old != nil {
			n.log.Info("datastore reachable again", "down", time.Since(old.since).Round(time.Millisecond))
		}
		// What waited for etcd goes now: a full read, pending releases.
		n.markReread()
		return
	}
	n.log.Warn("datastore unreachable: forwarding goes on for the pods this node has; pod add is refused until it is back",
		"endpoints", n.store.Endpoints(), "err", err)
}

// datastoreDown returns the error pod add answers while etcd is
// unreachable, or nil.
func (n *Node) datastoreDown() error {
	h := n.health.Load()
	if h == nil || h.reachable {
		return nil
	}
	return &unavailableError{fmt.Sprintf("datastore unreachable since %s (%s): pod add needs it for the address; pods already here keep forwarding; try again once `podnet status` says the datastore is reachable",
		h.since.UTC().Format(time.RFC3339), h.err)}
}

// requireDatastore is datastoreDown with a second look: while the node
// holds etcd for unreachable it asks once more (recheckTimeout), so that
// an etcd back since the last probe serves the request now.
func (n *Node) requireDatastore() error {
	err := n.datastoreDown()
	if err == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), recheckTimeout)
	defer cancel()
	if n.store.Ping(ctx) == nil {
		n.setHealth(nil)
		return nil
	}
	return err
}

// unavailableError is a refusal because a dependency (etcd) is down,
// not because of the request or a fault of the node: 503.
type unavailableError struct{ msg string }

func (e *unavailableError) Error() string { return e.msg }

// routineProbe pings etcd every probeInterval until ctx ends, keeping
// the node's idea of the datastore's health current: reachable at the
// first answer, unreachable after probeFailures unanswered pings in a
// row (one slow answer from a busy etcd must not refuse pod adds). The
// datastore goroutine starts it.
func (n *Node) routineProbe(ctx context.Context) {
	t := time.NewTicker(probeInterval)
	defer t.Stop()
	failed := 0
	for {
		pctx, cancel := context.WithTimeout(ctx, probeTimeout)
		err := n.store.Ping(pctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if failed++; err == nil {
			failed = 0
		}
		if err == nil || failed >= probeFailures {
			n.setHealth(err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// routineAlive keeps the node's liveness key under an etcd lease until
// ctx ends, granting a new lease whenever the old one is lost (etcd
// stalled for the lease's TTL, or was down). The datastore goroutine
// starts it.
func (n *Node) routineAlive(ctx context.Context) {
	lostOnce := false
	for ctx.Err() == nil {
		lost, err := n.store.KeepAlive(ctx, n.cfg.Name)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			n.log.Warn("liveness lease", "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(retryInterval):
			}
			continue
		}
		if lostOnce {
			n.log.Info("liveness lease granted again")
		}
		<-lost
		if ctx.Err() != nil {
			return
		}
		lostOnce = true
		n.log.Warn("liveness lease lost (etcd did not renew it in time); granting a new one")
	}
}

// datastoreStatus fills the status's datastore fields.
func (n *Node) datastoreStatus(st *nodeapi.Status) {
	h := n.health.Load()
	switch {
	case h == nil:
		st.Datastore = nodeapi.DatastoreUnknown
	case h.reachable:
		st.Datastore, st.DatastoreSince = nodeapi.DatastoreReachable, h.since
	default:
		st.Datastore, st.DatastoreSince, st.DatastoreError = nodeapi.DatastoreUnreachable, h.since, h.err
	}
	st.Registered = n.registered.Load()
}
