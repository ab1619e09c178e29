package bench

import (
	"context"
	"fmt"
	"os/exec"
	"time"
)

// waitPing waits until addr answers from netns ns (routes converge).
func waitPing(ctx context.Context, ns, addr string) error {
	var out []byte
	var err error
	for try := 0; try < 60; try++ {
		out, err = exec.CommandContext(ctx, "ip", "netns", "exec", ns, "ping", "-c1", "-W1", addr).CombinedOutput()
		if err == nil {
			return nil
		}
		time.Sleep(250 * time.Millisecond)
	}
	return fmt.Errorf("%s does not answer from %s: %v\n%s", addr, ns, err, out)
}
