package api

import (
	"bytes"
	"testing"
)

// FuzzDecode: Decode never panics, and whatever decodes and validates
// encodes (YAML and JSON) to text that decodes to the same resources.
func FuzzDecode(f *testing.F) {
	f.Add([]byte(calicoPool))
	f.Add([]byte("apiVersion: podnet.io/v1\nkind: IPPoolList\nitems:\n- metadata: {name: a}\n  spec: {cidr: 10.0.0.0/16}\n"))
	f.Add([]byte(`{"apiVersion":"podnet.io/v1","kind":"List","items":[{"apiVersion":"podnet.io/v1","kind":"Node","metadata":{"name":"w","labels":{"a":"b"}},"spec":{"bgp":{"ipv4Address":"10.0.0.1/24","asNumber":"1.2"}}}]}`))
	f.Add([]byte("apiVersion: podnet.io/v1\nkind: BGPPeer\nmetadata: {name: p}\nspec: {peerIP: 1.2.3.4, asNumber: 64567, holdTime: 90s, keepaliveTime: 30s, password: {env: PW}}\n---\napiVersion: podnet.io/v1\nkind: BGPConfiguration\nmetadata: {name: default}\nspec: {nodeToNodeMeshEnabled: false}\n"))
	f.Add([]byte("apiVersion: podnet.io/v1\nkind: WorkloadEndpoint\nmetadata: {name: w-p}\nspec: {node: w, workload: p, interfaceName: pn0, ipNetworks: [192.168.0.1/32], mac: 'ee:ee:ee:ee:ee:ee'}\n"))
	f.Add([]byte("apiVersion: podnet.io/v1\nkind: IPAMConfiguration\nmetadata: {name: default, creationTimestamp: '2024-01-01T00:00:00+02:00'}\nspec: {strictAffinity: true, maxBlocksPerHost: 3}\n"))
	f.Add([]byte("apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {name: rr, labels: {a: 'true'}}\nspec: {nodeSelector: \"!has(routeReflector) || zone in {'a', \\\"b\\\"}\", peerSelector: has(routeReflector)}\n"))
	f.Add([]byte("apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata: {name: default}\nspec: {communities: [{name: a, value: '1:2'}]}\n"))
	var b bytes.Buffer
	EncodeList(&b, KindIPPool, goldenPools(), ListMeta{ResourceVersion: "9"}, FormatJSON)
	f.Add(b.Bytes())
	f.Fuzz(func(t *testing.T, data []byte) {
		rs, err := Decode(bytes.NewReader(data))
		if err != nil {
			return
		}
		for _, r := range rs {
			r.SetDefaults()
			if r.Validate() != nil {
				return
			}
		}
		for _, format := range []string{FormatYAML, FormatJSON} {
			var first bytes.Buffer
			if err := Encode(&first, rs, format); err != nil {
				t.Fatalf("encode %s: %v", format, err)
			}
			again, err := Decode(bytes.NewReader(first.Bytes()))
			if err != nil {
				t.Fatalf("decode of our own %s: %v\n%s", format, err, first.Bytes())
			}
			var second bytes.Buffer
			if err := Encode(&second, again, format); err != nil {
				t.Fatal(err)
			}
			if len(again) != len(rs) || !bytes.Equal(first.Bytes(), second.Bytes()) {
				t.Fatalf("%s round trip changed:\n%s\nthen\n%s", format, first.Bytes(), second.Bytes())
			}
		}
	})
}
