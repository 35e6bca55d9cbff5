package devstack

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/FerretDB/FerretDB/ferretdb"
	"github.com/jackc/pgx/v5"
)

// ferretNewMu serialises ferretdb.New: it writes a package-level version
// variable, and tests may start several instances in one process.
var ferretNewMu sync.Mutex

// mongoStopTimeout bounds Close: FerretDB gives connected clients up to 3 s
// to leave before it cuts them, and its backend pool then closes.
const mongoStopTimeout = 10 * time.Second

// Mongo is an embedded FerretDB v1 speaking the MongoDB wire protocol on a
// free loopback port and storing its data in PostgreSQL.
type Mongo struct {
	uri    string
	cancel context.CancelFunc
	done   chan struct{}
	once   sync.Once
}

// StartMongo starts FerretDB with the "postgresql" handler over databaseURL.
// Each MongoDB database becomes a PostgreSQL schema in that database, so the
// cache data lives beside the nxg tables and survives restarts.
func StartMongo(ctx context.Context, databaseURL string, logger *slog.Logger) (*Mongo, error) {
	if logger == nil {
		logger = slog.Default()
	}
	if databaseURL == "" {
		return nil, errors.New("devstack: FerretDB needs a PostgreSQL database URL")
	}
	// FerretDB connects lazily, so a wrong URL would only surface on the
	// first MongoDB command; checking here gives the developer the cause at
	// start-up.
	if err := pingPostgres(ctx, databaseURL); err != nil {
		return nil, fmt.Errorf("devstack: FerretDB's PostgreSQL is not usable: %w", err)
	}

	flog := slog.New(ferretLogHandler{logger.Handler()}).With("stand_in", "ferretdb")

	ferretNewMu.Lock()
	f, err := ferretdb.New(&ferretdb.Config{
		Listener:      ferretdb.ListenerConfig{TCP: "127.0.0.1:0"},
		Logger:        flog,
		Handler:       "postgresql",
		PostgreSQLURL: databaseURL,
	})
	ferretNewMu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("devstack: create FerretDB: %w", err)
	}

	// FerretDB runs until its context ends; Close cancels it. The start
	// context only bounds start-up, so it must not stop the server later.
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	m := &Mongo{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(m.done)
		if err := f.Run(runCtx); err != nil {
			logger.Error("FerretDB stopped", "error", err)
		}
	}()
	// The listener is bound by New, so the URI is known at once.
	m.uri = f.MongoDBURI()
	logger.Info("started FerretDB (MongoDB API over PostgreSQL)", "uri", m.uri)
	return m, nil
}

func pingPostgres(ctx context.Context, databaseURL string) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, databaseURL)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if err := conn.Ping(ctx); err != nil {
		return fmt.Errorf("ping: %w", err)
	}
	return nil
}

// URI is a mongodb:// URI for the MongoDB driver, without a database name.
func (m *Mongo) URI() string { return m.uri }

// Close stops FerretDB and waits for it to close its listener, connections
// and PostgreSQL pool, so a test can drop the database right after.
func (m *Mongo) Close() error {
	var err error
	m.once.Do(func() {
		m.cancel()
		select {
		case <-m.done:
		case <-time.After(mongoStopTimeout):
			err = fmt.Errorf("devstack: FerretDB did not stop within %s", mongoStopTimeout)
		}
	})
	return err
}

// ferretLogHandler tames FerretDB's logging for a developer's terminal: it
// logs every connection at INFO, and every failed command (a duplicate key,
// the driver's endSessions that FerretDB lacks) as a multi-line WARN dump
// plus an ERROR for the failed SQL query, although the client gets the
// error anyway. Those become DEBUG; other warnings and errors, which mean
// FerretDB itself is in trouble, pass through.
type ferretLogHandler struct{ slog.Handler }

func (h ferretLogHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= slog.LevelWarn && h.Handler.Enabled(ctx, l)
}

func (h ferretLogHandler) Handle(ctx context.Context, r slog.Record) error {
	if isFerretCommandFailure(r) {
		if !h.Handler.Enabled(ctx, slog.LevelDebug) {
			return nil
		}
		r.Level = slog.LevelDebug
	}
	return h.Handler.Handle(ctx, r)
}

func (h ferretLogHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return ferretLogHandler{h.Handler.WithAttrs(attrs)}
}

func (h ferretLogHandler) WithGroup(name string) slog.Handler {
	return ferretLogHandler{h.Handler.WithGroup(name)}
}

// isFerretCommandFailure recognises FerretDB's per-command failure logs: the
// WARN dump of an error response (an ERROR dump means the connection was
// dropped and stays visible) and pgx's trace of a failed statement.
func isFerretCommandFailure(r slog.Record) bool {
	switch {
	case r.Level == slog.LevelWarn &&
		(strings.HasPrefix(r.Message, "Response header:") || strings.HasPrefix(r.Message, "Response message:")):
		return true
	case r.Message == "Query" || r.Message == "Exec" || r.Message == "BatchQuery" || r.Message == "Prepare":
		return true
	}
	return false
}
