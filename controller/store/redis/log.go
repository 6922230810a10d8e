package redis

import (
	"context"
	"fmt"
	"log/slog"
	"strings"

	goredis "github.com/redis/go-redis/v9"
)

// LogTo sends go-redis's own log lines (failed dials, pool and cluster
// trouble) to l, at Warn with component=redis, instead of the plain text
// go-redis writes to stderr by default. go-redis has one logger per
// process, so this holds for every client the process makes, and the last
// call wins.
func LogTo(l *slog.Logger) {
	goredis.SetLogger(slogPrintf{l.With("component", "redis")})
}

// slogPrintf adapts a slog.Logger to go-redis's Printf logger.
type slogPrintf struct{ l *slog.Logger }

func (p slogPrintf) Printf(ctx context.Context, format string, v ...any) {
	if ctx == nil {
		ctx = context.Background()
	}
	msg := strings.TrimSpace(fmt.Sprintf(format, v...))
	p.l.Log(ctx, slog.LevelWarn, strings.TrimPrefix(msg, "redis: "))
}
