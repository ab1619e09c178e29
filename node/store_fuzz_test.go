package node

import (
	"encoding/json"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"
)

// FuzzPodRecords: whatever bytes pods.json holds, parsing never panics,
// and what it accepts is records a daemon can use, which survive a save
// and a load unchanged.
func FuzzPodRecords(f *testing.F) {
	good, _ := json.Marshal([]PodRecord{
		{Name: "web", IP: netip.MustParseAddr("192.168.0.5"), Netns: "/run/netns/web", MAC: "02:00:00:00:00:05", Created: time.Unix(1, 0).UTC()},
		{Name: "db", IP: netip.MustParseAddr("192.168.0.6"), Netns: "/run/netns/n1-db", OwnsNetns: true, State: recDeleting},
	})
	f.Add(good)
	f.Add([]byte(`[{"name":"a","ip":"127.0.0.1","netns":"/x"}]`))
	f.Add([]byte(`[{"name":"a","ip":"10.0.0.1","netns":"../x"}]`))
	f.Add([]byte(`[{"name":"a","ip":"10.0.0.1","netns":"/x"},{"name":"b","ip":"10.0.0.1","netns":"/y"}]`))
	f.Add([]byte(`null`))
	f.Add([]byte(`[{"name":"a","netns":"/run/netns/a","state":"adding"}]`)) // an add's intent, before its address
	f.Fuzz(func(t *testing.T, b []byte) {
		recs, err := parsePodRecords(b)
		if err != nil {
			return
		}
		names := map[string]bool{}
		for _, r := range recs {
			if !podNameRE.MatchString(r.Name) || names[r.Name] || (!r.IP.Is4() && r.State != recAdding) || len(r.Netns) == 0 || r.Netns[0] != '/' {
				t.Fatalf("accepted a bad record %+v", r)
			}
			names[r.Name] = true
		}
		again, err := json.Marshal(recs)
		if err != nil {
			t.Fatal(err)
		}
		back, err := parsePodRecords(again)
		if err != nil {
			t.Fatalf("records it accepted do not load again: %v", err)
		}
		if len(recs) > 0 && !reflect.DeepEqual(recs, back) {
			t.Fatalf("round trip changed the records:\n%+v\n%+v", recs, back)
		}
	})
}

// TestPodRecordsRefused: each kind of bad record is refused with the
// record and the field named.
func TestPodRecordsRefused(t *testing.T) {
	for _, tt := range []struct{ file, want string }{
		{`[{"name":"A","ip":"10.0.0.1","netns":"/x"}]`, `record 0: name "A"`},
		{`[{"name":"a","ip":"10.0.0.1","netns":"/x"},{"name":"a","ip":"10.0.0.2","netns":"/y"}]`, "record 1: pod a recorded twice"},
		{`[{"name":"a","ip":"224.0.0.1","netns":"/x"}]`, "record 0 (pod a): ip 224.0.0.1"},
		{`[{"name":"a","ip":"10.0.0.1","netns":"/x"},{"name":"b","ip":"10.0.0.1","netns":"/y"}]`, "ip 10.0.0.1 is also pod a's"},
		{`[{"name":"a","ip":"10.0.0.1","netns":"/run/netns/../../etc"}]`, `netns "/run/netns/../../etc"`},
		{`[{"name":"a","ip":"10.0.0.1","netns":"/x","state":"odd"}]`, `unknown state "odd"`},
		{`[{"name":"a","netns":"/x"}]`, "record 0 (pod a): ip invalid IP"},
		{`{`, "parse:"},
	} {
		_, err := parsePodRecords([]byte(tt.file))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: got %v, want an error with %q", tt.file, err, tt.want)
		}
	}
}

// An add's intent record has no address yet, and loads.
func TestPodRecordsIntentLoads(t *testing.T) {
	recs, err := parsePodRecords([]byte(`[{"name":"a","netns":"/run/netns/a","state":"adding"},{"name":"b","netns":"/run/netns/b","state":"adding"}]`))
	if err != nil || len(recs) != 2 {
		t.Fatalf("intent records: %v, %+v", err, recs)
	}
}
