package datastore

import (
	"context"
	"log/slog"
	"maps"
	"slices"
	"sync/atomic"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// etcd logs through zap; podnet logs through slog. slogCore hands etcd's
// entries to a slog.Handler so that they land in the daemon's log with
// its format and level. etcd's info lines (dozens at each start) are
// logged at debug; warnings and errors as they are; DPanic, Panic and
// Fatal at error with fatal=true, written before zap ends the process,
// so an etcd that kills the daemon leaves the reason behind.
type slogCore struct {
	h slog.Handler
	// closing is set when podnet stops etcd: its complaints about
	// listeners closing under it are expected then, and logged at debug.
	closing *atomic.Bool
}

// newEtcdLogger returns a zap logger that writes to l.
func newEtcdLogger(l *slog.Logger, closing *atomic.Bool) *zap.Logger {
	return zap.New(slogCore{h: l.Handler(), closing: closing})
}

// expected are etcd warnings about choices podnet makes on purpose; they
// would greet every start, so they are logged at debug.
var expected = map[string]bool{
	// The unix socket and each client URL serve gRPC and HTTP on one
	// listener; podnet needs no separate HTTP port.
	"Running http and grpc server on single port. This is not recommended for production.": true,
	// The unix socket is plain text by design (its file mode guards it)
	// next to https listeners.
	"scheme is http or unix while key and cert files are present; ignoring key and cert files":           true,
	"scheme is http or unix while --client-cert-auth is enabled; ignoring client cert auth for this URL": true,
	// Clients prove who they are with certificates; etcd's own users and
	// their tokens are not used.
	"simple token is not cryptographically signed": true,
}

func (c slogCore) entryLevel(e zapcore.Entry) slog.Level {
	if e.Level < zapcore.DPanicLevel && c.closing.Load() || e.Level == zapcore.WarnLevel && expected[e.Message] {
		return slog.LevelDebug
	}
	return slogLevel(e.Level)
}

func slogLevel(l zapcore.Level) slog.Level {
	switch {
	case l < zapcore.WarnLevel:
		return slog.LevelDebug
	case l == zapcore.WarnLevel:
		return slog.LevelWarn
	default:
		return slog.LevelError
	}
}

func (c slogCore) Enabled(l zapcore.Level) bool {
	// Fatal entries are always written: they are the last word.
	return l >= zapcore.DPanicLevel || c.h.Enabled(context.Background(), slogLevel(l))
}

func (c slogCore) With(fs []zapcore.Field) zapcore.Core {
	return slogCore{h: c.h.WithAttrs(attrs(fs)), closing: c.closing}
}

func (c slogCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(e.Level) {
		return ce.AddCore(e, c)
	}
	return ce
}

func (c slogCore) Write(e zapcore.Entry, fs []zapcore.Field) error {
	lvl := c.entryLevel(e)
	if !c.h.Enabled(context.Background(), lvl) && e.Level < zapcore.DPanicLevel {
		return nil
	}
	r := slog.NewRecord(e.Time, lvl, e.Message, 0)
	if e.Level >= zapcore.DPanicLevel {
		r.AddAttrs(slog.Bool("fatal", true))
	}
	r.AddAttrs(attrs(fs)...)
	return c.h.Handle(context.Background(), r)
}

func (slogCore) Sync() error { return nil }

// attrs turns zap fields into slog attributes, sorted by key (zap's map
// encoder forgets the order).
func attrs(fs []zapcore.Field) []slog.Attr {
	if len(fs) == 0 {
		return nil
	}
	enc := zapcore.NewMapObjectEncoder()
	for _, f := range fs {
		f.AddTo(enc)
	}
	out := make([]slog.Attr, 0, len(enc.Fields))
	for _, k := range slices.Sorted(maps.Keys(enc.Fields)) {
		out = append(out, slog.Any(k, enc.Fields[k]))
	}
	return out
}
