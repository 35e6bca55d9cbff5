// Package db owns the PostgreSQL side of NXG: the embedded schema migrations,
// the connection pool, and the transaction helpers every handler runs in.
package db

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// PoolConfig tunes the pool beyond what the connection string says.
type PoolConfig struct {
	// MaxConns caps open connections; 0 keeps pgx's default (the larger of 4
	// and the number of CPUs).
	MaxConns int32
	// ApplicationName shows in pg_stat_activity, so operators can tell the
	// API, workers and tools apart.
	ApplicationName string
}

// Open connects a pool to url and pings it, so a wrong address or a stopped
// server fails at start-up rather than on the first request.
func Open(ctx context.Context, url string, pc PoolConfig) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("parse database url: %w", err)
	}
	if pc.MaxConns > 0 {
		cfg.MaxConns = pc.MaxConns
	}
	if pc.ApplicationName != "" {
		cfg.ConnConfig.RuntimeParams["application_name"] = pc.ApplicationName
	}
	// Idle connections are recycled so a load balancer or a PostgreSQL
	// restart never leaves the pool holding dead sockets for long.
	cfg.MaxConnIdleTime = 5 * time.Minute
	cfg.HealthCheckPeriod = 30 * time.Second
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("create pool: %w", err)
	}
	pingCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := pool.Ping(pingCtx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("connect to postgres at %s: %w", redactURL(cfg), err)
	}
	return pool, nil
}

// redactURL names the server without credentials, for error messages.
func redactURL(cfg *pgxpool.Config) string {
	c := cfg.ConnConfig
	return fmt.Sprintf("%s:%d/%s", c.Host, c.Port, c.Database)
}

// Beginner is what WithTx needs: a pool, or a transaction for a nested
// (savepoint) transaction.
type Beginner interface {
	Begin(ctx context.Context) (pgx.Tx, error)
}

// TxBeginner can start a transaction with options; a pool can.
type TxBeginner interface {
	BeginTx(ctx context.Context, opts pgx.TxOptions) (pgx.Tx, error)
}

// readSnapshot is a read-only transaction seeing one consistent snapshot, so
// several queries of one response (a page and its children) agree.
var readSnapshot = pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}

// WithReadTxV runs fn in a read-only, repeatable-read transaction.
func WithReadTxV[T any](ctx context.Context, b TxBeginner, fn func(tx pgx.Tx) (T, error)) (T, error) {
	return WithTxV(ctx, beginFunc(func(ctx context.Context) (pgx.Tx, error) {
		return b.BeginTx(ctx, readSnapshot)
	}), fn)
}

// beginFunc adapts a function to Beginner.
type beginFunc func(ctx context.Context) (pgx.Tx, error)

func (f beginFunc) Begin(ctx context.Context) (pgx.Tx, error) { return f(ctx) }

// WithTx runs fn in a transaction, committing when fn returns nil and rolling
// back otherwise (also when fn panics), so a handler can never half-write.
func WithTx(ctx context.Context, b Beginner, fn func(tx pgx.Tx) error) error {
	_, err := WithTxV(ctx, b, func(tx pgx.Tx) (struct{}, error) {
		return struct{}{}, fn(tx)
	})
	return err
}

// WithTxV is WithTx for a body that returns a value.
func WithTxV[T any](ctx context.Context, b Beginner, fn func(tx pgx.Tx) (T, error)) (T, error) {
	var zero T
	tx, err := b.Begin(ctx)
	if err != nil {
		return zero, fmt.Errorf("begin transaction: %w", err)
	}
	// Rollback after a successful Commit is a no-op, so deferring it covers
	// errors and panics alike. Its own error is not interesting: the
	// transaction is void either way.
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()

	v, err := fn(tx)
	if err != nil {
		return zero, err
	}
	if err := tx.Commit(ctx); err != nil {
		return zero, fmt.Errorf("commit transaction: %w", err)
	}
	return v, nil
}

// IsNotFound reports whether err says a query found no row.
func IsNotFound(err error) bool {
	return errors.Is(err, pgx.ErrNoRows)
}
