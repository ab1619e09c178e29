package udpgen

import (
	"context"
	"fmt"
	"math"
	"time"
)

// MaxLossPct is the loss under which a rate counts as carried.
const MaxLossPct = 1.0

// After a trial's drain, while packets are missing, the count is read
// every settleStep until it has not grown settleSteps times in a row,
// for at most settleMax.
const (
	settleStep  = 30 * time.Millisecond
	settleSteps = 3
	settleMax   = time.Second
)

// Trial is one fixed-rate run of a search.
type Trial struct {
	// OfferedPPS is the rate asked for; 0 = as fast as possible.
	OfferedPPS float64
	SentPPS    float64
	RecvPPS    float64
	Sent, Recv uint64
	LossPct    float64
	Seconds    float64
	// CPUSeconds is SearchConfig.CPU's delta over the trial.
	CPUSeconds float64
}

// Passed says whether the trial lost under MaxLossPct.
func (t Trial) Passed() bool { return t.Sent > 0 && t.LossPct < MaxLossPct }

// Counter counts the packets of one run at the receiving end: a Sink,
// or a sink on another host reached through a control connection.
type Counter interface {
	Begin(run uint32) error
	Count() (uint64, error)
}

// SearchConfig is a rate search on one path.
type SearchConfig struct {
	Send SendConfig // Rate, Duration and Run are set by the search
	// Trial is the length of one trial; 0 = 500ms.
	Trial time.Duration
	// Trials bounds the number of trials; 0 = 6.
	Trials int
	// Drain is how long to wait after a trial for packets still on the
	// path; 0 = 100ms.
	Drain time.Duration
	// CPU, when set, returns a cumulative CPU-seconds counter (of the
	// forwarding daemon, or of the machine); each trial records its
	// delta. nil = no CPU accounting.
	CPU func() float64
}

// SearchResult is the outcome of a search.
type SearchResult struct {
	// Best is the passing trial with the highest received rate; its
	// RecvPPS is the path's rate. Best.Sent == 0 when nothing passed.
	Best   Trial
	Trials []Trial
	// GeneratorBound is true when the first, unpaced trial already
	// passed: the path took everything the generator could send, so the
	// rate is a lower bound.
	GeneratorBound bool
}

// Search finds the highest rate the path from cfg.Send.Netns to sink
// carries with under MaxLossPct loss. The first trial sends as fast as
// possible; what arrived bounds the path's capacity. Later trials offer
// a little under the received rate of the last failure, then bisect
// between the best pass and the lowest failure.
func Search(ctx context.Context, sink Counter, cfg SearchConfig, run uint32) (SearchResult, error) {
	if cfg.Trial <= 0 {
		cfg.Trial = 500 * time.Millisecond
	}
	if cfg.Trials <= 0 {
		cfg.Trials = 6
	}
	if cfg.Drain <= 0 {
		cfg.Drain = 100 * time.Millisecond
	}
	var res SearchResult
	var pass, fail float64 // best passing and lowest failing offered rates
	rate := 0.0
	for i := 0; i < cfg.Trials; i++ {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		t, err := trial(sink, cfg, rate, run+uint32(i))
		if err != nil {
			return res, err
		}
		res.Trials = append(res.Trials, t)
		offered := t.OfferedPPS
		if offered == 0 {
			offered = t.SentPPS
		}
		if t.Passed() {
			if i == 0 {
				res.GeneratorBound = true
				res.Best = t
				return res, nil
			}
			if t.RecvPPS > res.Best.RecvPPS {
				res.Best = t
			}
			pass = max(pass, offered)
		} else if fail == 0 || offered < fail {
			fail = offered
			if i == 0 {
				// An overloaded path delivers about its capacity, or
				// less when overload costs it (receive livelock): the
				// capacity is likely below half again what arrived.
				fail = math.Min(offered, 1.5*t.RecvPPS)
			}
		}
		switch {
		case pass == 0:
			// Nothing passed yet: ask for a bit under what got through.
			rate = math.Min(t.RecvPPS, offered) * 0.9
		case fail > 0 && fail/pass < 1.05:
			return res, nil // close enough: within 5 %
		default:
			rate = math.Sqrt(pass * fail)
		}
		if rate < 1 {
			return res, fmt.Errorf("udpgen: nothing gets through to the sink (trial %d: sent %d, received %d)", i+1, t.Sent, t.Recv)
		}
	}
	return res, nil
}

func trial(sink Counter, cfg SearchConfig, rate float64, run uint32) (Trial, error) {
	s := cfg.Send
	s.Rate, s.Duration, s.Packets, s.Run = rate, cfg.Trial, 0, run
	if err := sink.Begin(run); err != nil {
		return Trial{}, err
	}
	var cpu0 float64
	if cfg.CPU != nil {
		cpu0 = cfg.CPU()
	}
	rep, err := Send(s)
	if err != nil {
		return Trial{}, err
	}
	// Packets still on the path, or read but not yet counted by a sink
	// whose goroutines a busy machine has not scheduled, are late, not
	// lost: wait for the count to settle.
	time.Sleep(cfg.Drain)
	recv, err := sink.Count()
	for stable, settle := 0, time.Now().Add(settleMax); err == nil && recv < rep.Sent && stable < settleSteps && time.Now().Before(settle); {
		time.Sleep(settleStep)
		var again uint64
		again, err = sink.Count()
		if again == recv {
			stable++
		} else {
			stable, recv = 0, again
		}
	}
	if err != nil {
		return Trial{}, err
	}
	t := Trial{OfferedPPS: rate, Sent: rep.Sent, Recv: recv, SentPPS: rep.PPS(),
		RecvPPS: float64(recv) / rep.Elapsed.Seconds(), Seconds: rep.Elapsed.Seconds()}
	if cfg.CPU != nil {
		t.CPUSeconds = cfg.CPU() - cpu0
	}
	if rep.Sent > 0 {
		t.LossPct = 100 * (1 - float64(recv)/float64(rep.Sent))
	}
	return t, nil
}
