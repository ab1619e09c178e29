package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"podnet/api"
	"podnet/datastore"
	"podnet/lab"
	"podnet/resources"
)

// The daemon's route event messages (package node logs them).
const (
	logRouteAdded     = "route added"
	logRouteWithdrawn = "route withdrawn"
	logRouteEventsCut = "route events not logged"
)

// logPollInterval is how often the daemons' logs are read for new lines.
const logPollInterval = 100 * time.Millisecond

func newLabEventsCmd(name *string) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "events [--name NAME] [--seconds S]",
		Short: "Stream the lab's BGP route events and pool changes until interrupted",
		Long: `Stream, one line each with the time and where it happened:
  - BGP route events from every node's daemon log: a prefix learned
    (added) or lost (withdrawn), with the peer that sent it and the next hop;
  - IPPool changes in the lab's datastore: a pool created or deleted, and
    each changed field, e.g. "pool default-ipv4-ippool: ipipMode Always → Never".
Only what happens after the command starts is shown. It runs until
interrupted (Ctrl-C), or for --seconds S.`,
		Args: cobra.NoArgs,
	}
	seconds := cmd.Flags().Float64("seconds", 0, "stop after this many seconds (0: until interrupted)")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if *seconds < 0 {
			return usagef("--seconds: %v is negative", *seconds)
		}
		l, err := openLab(*name)
		if err != nil {
			return err
		}
		ctx, stop := signal.NotifyContext(cmdContext(cmd), os.Interrupt, syscall.SIGTERM)
		defer stop()
		if *seconds > 0 {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, time.Duration(*seconds*float64(time.Second)))
			defer cancel()
		}
		return streamLabEvents(ctx, l.Status(), stdout)
	}
	return cmd
}

// streamLabEvents follows every node's daemon log and the lab's pools and
// writes one line per event to w until ctx is done. Each source has its own
// goroutine; lines meet in one channel so that they never interleave.
func streamLabEvents(ctx context.Context, st lab.Status, w io.Writer) error {
	lines := make(chan string, 64)
	errs := make(chan error, len(st.Nodes)+1)
	var wg sync.WaitGroup
	for _, n := range st.Nodes {
		if n.Log == "" {
			continue
		}
		t, err := newLogTail(n.Log)
		if err != nil {
			return fmt.Errorf("follow %s's daemon log: %w", n.Name, err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer t.close()
			errs <- t.follow(ctx, n.Name, lines)
		}()
	}
	if st.Datastore != "" {
		store, err := datastore.Open(ctx, datastore.Config{Endpoints: []string{st.Datastore}})
		if err != nil {
			return fmt.Errorf("open the lab's datastore: %w", err)
		}
		defer store.Close()
		pools, err := resources.Collection(store, api.KindIPPool)
		if err != nil {
			return err
		}
		// The list is the baseline: the watch starts after its revision,
		// so no change between the two is lost.
		known, rev, err := listPools(ctx, pools)
		if err != nil {
			return err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- watchPools(ctx, pools, known, rev, lines)
		}()
	}
	go func() { wg.Wait(); close(lines) }()
	fmt.Fprintf(w, "%s  %-10s watching %d node log(s) and the pools of lab %s\n", stamp(time.Now()), "lab", len(st.Nodes), st.Name)
	for line := range lines {
		fmt.Fprintln(w, line)
	}
	close(errs)
	var all []error
	for err := range errs {
		if err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
			all = append(all, err)
		}
	}
	return errors.Join(all...)
}

func stamp(t time.Time) string { return t.Local().Format("15:04:05.000") }

// logTail reads the lines appended to a file from the moment it was
// opened. A file that shrinks (a daemon restarted and truncated its log) is
// read again from its start.
type logTail struct {
	path string
	f    *os.File
	off  int64
	part []byte // an unfinished last line
}

func newLogTail(path string) (*logTail, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	off, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		f.Close()
		return nil, err
	}
	return &logTail{path: path, f: f, off: off}, nil
}

func (t *logTail) close() { t.f.Close() }

// follow sends node's route events to out until ctx is done.
func (t *logTail) follow(ctx context.Context, node string, out chan<- string) error {
	tick := time.NewTicker(logPollInterval)
	defer tick.Stop()
	buf := make([]byte, 64<<10)
	for {
		if fi, err := t.f.Stat(); err == nil && fi.Size() < t.off {
			t.off, t.part = 0, nil
		}
		for {
			n, err := t.f.ReadAt(buf, t.off)
			t.off += int64(n)
			t.part = append(t.part, buf[:n]...)
			for {
				i := slices.Index(t.part, '\n')
				if i < 0 {
					break
				}
				if line, ok := routeEventLine(node, string(t.part[:i])); ok {
					select {
					case out <- line:
					case <-ctx.Done():
						return ctx.Err()
					}
				}
				t.part = t.part[i+1:]
			}
			if n < len(buf) || err != nil {
				if err != nil && !errors.Is(err, io.EOF) {
					return fmt.Errorf("read %s: %w", t.path, err)
				}
				break
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// routeEventLine turns a daemon log line (slog's text format) that is a
// route event into an events line; ok is false for any other line.
func routeEventLine(node, line string) (string, bool) {
	kv := parseLogfmt(line)
	at := time.Now()
	if t, err := time.Parse(time.RFC3339Nano, kv["time"]); err == nil {
		at = t
	}
	head := fmt.Sprintf("%s  %-10s ", stamp(at), node)
	switch kv["msg"] {
	case logRouteAdded:
		return head + fmt.Sprintf("route added     %s from peer %s, next hop %s", kv["prefix"], kv["peer"], kv["nextHop"]), true
	case logRouteWithdrawn:
		return head + fmt.Sprintf("route withdrawn %s from peer %s, next hop %s", kv["prefix"], kv["peer"], kv["nextHop"]), true
	case logRouteEventsCut:
		return head + fmt.Sprintf("%s more added and %s more withdrawn routes not logged (rate limit)", kv["added"], kv["withdrawn"]), true
	}
	return "", false
}

// parseLogfmt splits a slog text line into its keys and values; quoted
// values are unquoted.
func parseLogfmt(line string) map[string]string {
	kv := map[string]string{}
	s := line
	for s != "" {
		s = strings.TrimLeft(s, " ")
		eq := strings.IndexByte(s, '=')
		if eq <= 0 {
			break
		}
		key := s[:eq]
		s = s[eq+1:]
		var val string
		if strings.HasPrefix(s, `"`) {
			// Find the closing quote, skipping escaped ones.
			end := 1
			for end < len(s) && s[end] != '"' {
				if s[end] == '\\' {
					end++
				}
				end++
			}
			if end >= len(s) {
				break
			}
			q := s[:end+1]
			s = s[end+1:]
			if err := json.Unmarshal([]byte(q), &val); err != nil {
				val = strings.Trim(q, `"`)
			}
		} else {
			sp := strings.IndexByte(s, ' ')
			if sp < 0 {
				sp = len(s)
			}
			val, s = s[:sp], s[sp:]
		}
		kv[key] = val
	}
	return kv
}

// poolSpec is a pool's spec as a flat map of its JSON fields, to diff.
type poolSpec map[string]string

func listPools(ctx context.Context, c datastore.Collection) (map[string]poolSpec, int64, error) {
	kvs, rev, err := c.List(ctx, "")
	if err != nil {
		return nil, 0, fmt.Errorf("list pools: %w", err)
	}
	known := make(map[string]poolSpec, len(kvs))
	for _, kv := range kvs {
		if spec, err := decodePoolSpec(kv); err == nil {
			known[kv.Name] = spec
		}
	}
	return known, rev, nil
}

func decodePoolSpec(kv datastore.KV) (poolSpec, error) {
	r, err := resources.FromKV(api.KindIPPool, kv)
	if err != nil {
		return nil, err
	}
	b, err := json.Marshal(r.(*api.IPPool).Spec)
	if err != nil {
		return nil, err
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, err
	}
	spec := poolSpec{}
	for k, v := range m {
		if s, ok := v.(string); ok {
			spec[k] = s
		} else {
			vb, _ := json.Marshal(v)
			spec[k] = string(vb)
		}
	}
	return spec, nil
}

// watchPools sends a line per pool created or deleted and per changed
// field, until ctx is done. After a broken watch (a compaction, etcd
// restarted) it lists again and reports what changed meanwhile.
func watchPools(ctx context.Context, c datastore.Collection, known map[string]poolSpec, rev int64, out chan<- string) error {
	send := func(line string) bool {
		select {
		case out <- fmt.Sprintf("%s  %-10s %s", stamp(time.Now()), "datastore", line):
			return true
		case <-ctx.Done():
			return false
		}
	}
	for ctx.Err() == nil {
		for evs := range c.Watch(ctx, rev) {
			for _, ev := range evs {
				rev = max(rev, ev.Revision)
				var now poolSpec
				if !ev.Deleted {
					spec, err := decodePoolSpec(datastore.KV{Name: ev.Name, Value: ev.Value, Revision: ev.Revision})
					if err != nil {
						if !send(fmt.Sprintf("pool %s: unreadable: %v", ev.Name, err)) {
							return ctx.Err()
						}
						continue
					}
					now = spec
				}
				for _, line := range poolChanges(ev.Name, known[ev.Name], now) {
					if !send(line) {
						return ctx.Err()
					}
				}
				if now == nil {
					delete(known, ev.Name)
				} else {
					known[ev.Name] = now
				}
			}
		}
		if ctx.Err() != nil {
			break
		}
		// The watch broke: catch up from a fresh list.
		fresh, r, err := listPools(ctx, c)
		if err != nil {
			if !send(fmt.Sprintf("pools: %v (retrying)", err)) {
				return ctx.Err()
			}
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
			continue
		}
		names := make([]string, 0, len(known)+len(fresh))
		for n := range known {
			names = append(names, n)
		}
		for n := range fresh {
			if _, ok := known[n]; !ok {
				names = append(names, n)
			}
		}
		slices.Sort(names)
		for _, n := range names {
			for _, line := range poolChanges(n, known[n], fresh[n]) {
				if !send(line) {
					return ctx.Err()
				}
			}
		}
		known, rev = fresh, r
	}
	return ctx.Err()
}

// poolChanges describes going from old to now (nil: no such pool).
func poolChanges(name string, old, now poolSpec) []string {
	switch {
	case old == nil && now == nil:
		return nil
	case old == nil:
		return []string{fmt.Sprintf("pool %s created: cidr %s, ipipMode %s, vxlanMode %s", name,
			now.get("cidr"), now.get("ipipMode"), now.get("vxlanMode"))}
	case now == nil:
		return []string{fmt.Sprintf("pool %s deleted (cidr %s)", name, old.get("cidr"))}
	}
	keys := make([]string, 0, len(old)+len(now))
	for k := range old {
		keys = append(keys, k)
	}
	for k := range now {
		if _, ok := old[k]; !ok {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	var out []string
	for _, k := range keys {
		if old.get(k) != now.get(k) {
			out = append(out, fmt.Sprintf("pool %s: %s %s → %s", name, k, old.get(k), now.get(k)))
		}
	}
	return out
}

// get is a field's value; an absent field is the resource's zero value,
// which for the modes means Never.
func (p poolSpec) get(k string) string {
	if v, ok := p[k]; ok && v != "" {
		return v
	}
	switch k {
	case "ipipMode", "vxlanMode":
		return string(api.EncapNever)
	case "disabled", "natOutgoing", "disableBGPExport":
		return "false"
	}
	return "(none)"
}
