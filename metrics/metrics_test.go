package metrics

import (
	"net"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// Every metric the collector can emit has a row in docs/metrics.md.
func TestEveryMetricDocumented(t *testing.T) {
	doc, err := os.ReadFile("../docs/metrics.md")
	if err != nil {
		t.Fatal(err)
	}
	ch := make(chan *prometheus.Desc, len(allDescriptions))
	NewCollector(Source{}).Describe(ch)
	close(ch)
	fq := regexp.MustCompile(`fqName: "([^"]+)"`)
	n := 0
	for d := range ch {
		m := fq.FindStringSubmatch(d.String())
		if m == nil {
			t.Fatalf("no name in %s", d)
		}
		n++
		if !strings.Contains(string(doc), "| `"+m[1]+"` |") {
			t.Errorf("%s is not in docs/metrics.md's table", m[1])
		}
	}
	if n != len(allDescriptions) || n < 20 {
		t.Fatalf("described %d metrics, want all %d", n, len(allDescriptions))
	}
}

func TestListenErrors(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	for _, tc := range []struct{ addr, want string }{
		{"127.0.0.1", "metrics listen address \"127.0.0.1\""},
		{"nonsense:port:9", "metrics listen address"},
		{taken.Addr().String(), "metrics listen: listen tcp " + taken.Addr().String()},
	} {
		s, err := Listen(tc.addr, Source{}, nil)
		if err == nil {
			s.Close()
			t.Errorf("Listen(%q) succeeded", tc.addr)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Listen(%q) = %v, want it to contain %q", tc.addr, err, tc.want)
		}
	}
}
