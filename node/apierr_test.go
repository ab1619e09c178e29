package node

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
)

// TestWriteErrCodes: what may succeed if tried again (the datastore did
// not answer, the node is stopping) answers 503, which the CLI and the
// CNI plugin (code 11, "try again later") act on; a bad request 400;
// anything else 500.
func TestWriteErrCodes(t *testing.T) {
	tests := []struct {
		err  error
		want int
	}{
		{&unavailableError{"datastore unreachable"}, http.StatusServiceUnavailable},
		{fmt.Errorf("pod p: %w", errStopped), http.StatusServiceUnavailable},
		{fmt.Errorf("pod p: assign address: %w", context.DeadlineExceeded), http.StatusServiceUnavailable},
		{badRequest("pod %s already exists", "p"), http.StatusBadRequest},
		{errors.New("create pod link: file exists"), http.StatusInternalServerError},
	}
	for _, tt := range tests {
		rec := httptest.NewRecorder()
		writeErr(rec, tt.err)
		if rec.Code != tt.want {
			t.Errorf("%v: answered %d, want %d", tt.err, rec.Code, tt.want)
		}
	}
}
