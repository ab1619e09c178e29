// Package bench measures podnet's data path against the kernel's, in the
// same run on the same machine, and the control plane's reaction times.
//
// # Paths
//
// A path is a client pod, a server pod and what lies between them. The
// suite (Run) has three scenarios, each with kernel paths (the reference:
// what Linux does for the same job) and podnet paths:
//
//   - same-node: a kernel veth pair between two namespaces; podnet with
//     offloading TAPs (virtio headers, TSO); podnet with plain TAPs.
//   - cross-node: two lab nodes on a fabric bridge. Kernel direct routing
//     (pods on veths, static routes), and every kernel tunnel this kernel
//     can create (VXLAN, IP-in-IP, GRE, Geneve; the rest are reported as
//     skipped with the reason); podnet VXLAN, IP-in-IP and plain routing.
//   - nat: a pod reaching a host outside the cluster: kernel routing (the
//     outside host routes back), kernel MASQUERADE (nftables), podnet NAT
//     outgoing.
//
// Each podnet path names a reference kernel path (VXLAN against kernel
// VXLAN, NAT against MASQUERADE, the rest against direct routing or the
// veth pair) and its ratios are taken against that one.
//
// # Rounds
//
// Every path is built once (one lab per path, all of a scenario's labs up
// together) and then measured once per round; within a round the kernel
// and podnet paths take turns. A figure is reported as its median and
// min–max over the rounds, and a ratio is computed per round (podnet's
// round i over its reference's round i) before its median is taken, so
// that a machine that slows down between rounds does not bias the ratio.
//
// # Measurements, per path and round
//
//   - Bulk TCP: iperf3, one connection by default, Gbit/s received.
//   - Latency: ping every 10 ms, and a TCP request/response test (a
//     64-byte request and its 64-byte response, back to back on one
//     connection, client and server in this process with their sockets
//     in the pods' namespaces): p50, p90 and p99 in µs.
//   - Packet rate: bench/udpgen's generator (sendmmsg batches from two
//     sockets) and sink (recvmmsg on two SO_REUSEPORT sockets, counting
//     exactly the packets of the current trial) search for the highest
//     rate that loses under 1 %, for payloads of 18 (a 64-byte Ethernet
//     frame), 64 and 1400 bytes. When even the generator's full rate
//     arrives the figure is marked generator-bound (a lower bound).
//     On kernel paths iperf3 -u -b 0 runs beside it with the first
//     payload size, to show what a single-threaded sender reaches.
//   - CPU: for podnet paths the user+system time of the lab's podnet
//     daemons (/proc/PID/stat, all threads) over the run; for kernel
//     paths the machine's system+softirq time (/proc/stat), which also
//     holds the senders' and receivers' system time and whatever else
//     the machine does, so on a shared machine it is an upper bound.
//     Reported per Gbit (= cores per Gbit/s) and per million packets
//     (= cores per Mpps).
//   - NAT paths also count sequential new TCP connections per second
//     (connect, then close, for 2 s a round), from a client process in
//     the pod's namespace (podnet bench connect-loop) as a pod's own
//     client would, and measure one TCP stream the other way (iperf3 -R, "1 down"):
//     the outside host sending to the pod, which through podnet's NAT is
//     the netstack's own TCP, not the pod's.
//
// # Output
//
// Report is the one result shape; schema.json (podnet bench schema) is
// its JSON Schema, and every numeric key names its unit. WriteTable
// prints it, WriteDir writes results.json, results.md and the charts
// (PNG and SVG), Compare sets two reports side by side and flags the
// figures whose ranges over the rounds do not overlap.
//
// # Two hosts
//
// ServePair and RunPair measure between two existing pods without a lab,
// e.g. on two machines (podnet bench pair --server / --client ADDR):
// their own bulk TCP stream, ping, request/response and the UDP search,
// with the UDP sink counted through a control connection.
package bench
