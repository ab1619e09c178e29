package resources

import (
	"errors"
	"fmt"
	"strings"

	"podnet/api"
	"podnet/datastore"
)

// notFound, exists and conflict wrap the datastore sentinels, so that
// errors.Is(err, datastore.ErrNotFound) etc. work, with calicoctl's
// texts: "resource does not exist: IPPool(x)".
func notFound(kind, name string) error {
	return fmt.Errorf("%w: %s(%s)", datastore.ErrNotFound, kind, name)
}

func exists(kind, name string) error {
	return fmt.Errorf("%w: %s(%s)", datastore.ErrExists, kind, name)
}

func conflict(kind, name string, given, stored int64) error {
	if stored == 0 {
		return fmt.Errorf("%w: %s(%s): it changed while being written; get it again and retry", datastore.ErrConflict, kind, name)
	}
	return fmt.Errorf("%w: %s(%s): resourceVersion %d is not the current %d; get it again and retry", datastore.ErrConflict, kind, name, given, stored)
}

// storeErr turns a datastore error about kind/name into ours.
func storeErr(err error, kind, name string, rev int64) error {
	switch {
	case errors.Is(err, datastore.ErrNotFound):
		return notFound(kind, name)
	case errors.Is(err, datastore.ErrExists):
		return exists(kind, name)
	case errors.Is(err, datastore.ErrConflict):
		return conflict(kind, name, rev, 0)
	}
	return err
}

// PoolInUseError refuses to delete a pool with allocated addresses.
type PoolInUseError struct {
	Pool  string
	Count int
	// Where says where they are, e.g. "worker1: 3, worker2: 2".
	Where string
}

func (e *PoolInUseError) Error() string {
	where := ""
	if e.Where != "" {
		where = " (" + e.Where + ")"
	}
	noun := "addresses"
	if e.Count == 1 {
		noun = "address"
	}
	return fmt.Sprintf("IPPool %s still has %d allocated %s%s; release them or delete with --force", e.Pool, e.Count, noun, where)
}

// BatchError is the failure of a multi-resource request, worded as
// calicoctl words it. Either nothing was written (Done is empty and Errs
// holds every invalid resource's error), or the datastore failed
// part-way: Done holds the resources written, in order, and Errs the one
// write that failed.
type BatchError struct {
	// Verb is "create", "apply", "replace" or "delete".
	Verb string
	// Kind is the kind all resources share, or "" when they differ.
	Kind string
	// Total is the number of resources in the request.
	Total int
	Done  []api.Resource
	Errs  []error
}

var pastTense = map[string]string{"create": "created", "apply": "applied", "replace": "replaced", "delete": "deleted"}

func (e *BatchError) Error() string {
	kind := ""
	if e.Kind != "" {
		kind = "'" + e.Kind + "' "
	}
	msgs := make([]string, len(e.Errs))
	for i, err := range e.Errs {
		msgs[i] = err.Error()
	}
	if len(e.Done) > 0 {
		return fmt.Sprintf("Partial success: %s the first %d out of %d %sresources:\nHit error: %s",
			pastTense[e.Verb], len(e.Done), e.Total, kind, strings.Join(msgs, "\n"))
	}
	if e.Total == 1 {
		return fmt.Sprintf("failed to %s %sresource: [%s]", e.Verb, kind, strings.Join(msgs, "; "))
	}
	return fmt.Sprintf("failed to %s any %sresources: [%s]", e.Verb, kind, strings.Join(msgs, "; "))
}

// Unwrap gives errors.Is/As access to the underlying errors.
func (e *BatchError) Unwrap() []error { return e.Errs }

// OperationNotSupportedError is an operation the kind does not allow on
// that resource, in calicoctl's words: "operation Delete is not supported
// on BGPConfiguration(default): ...".
type OperationNotSupportedError struct {
	Operation, Key, Reason string
}

func (e *OperationNotSupportedError) Error() string {
	return fmt.Sprintf("operation %s is not supported on %s: %s", e.Operation, e.Key, e.Reason)
}
