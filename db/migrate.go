package db

import (
	"context"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"io/fs"
	"log/slog"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivermigrate"
)

// migrateLockKey is the advisory lock that serialises migrations ("nxg-migr").
const migrateLockKey int64 = 0x6e78672d6d696772

//go:embed migrations/*.sql
var migrationsFS embed.FS

// Migrations returns the embedded schema migrations, for tools that need to
// read them (the test template's fingerprint, sqlc).
func Migrations() fs.FS {
	sub, err := fs.Sub(migrationsFS, "migrations")
	if err != nil {
		// The folder is embedded at build time; failing here is a build defect.
		panic(err)
	}
	return sub
}

// Migrate brings the database up to date: River's own tables first (our
// schema may reference nothing of River's, but jobs are inserted from our
// transactions, so both must exist before the server starts), then ours.
// It is safe to run from several processes at once (replicas starting
// together): Migrate holds a session-level advisory lock for the whole run,
// since neither migrator locks on its own. The pool needs two connections:
// one holds the lock while the migrators use another.
func Migrate(ctx context.Context, pool *pgxpool.Pool, logger *slog.Logger) error {
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("acquire migration lock connection: %w", err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", migrateLockKey); err != nil {
		return fmt.Errorf("take migration lock: %w", err)
	}
	defer func() {
		_, _ = conn.Exec(context.WithoutCancel(ctx), "SELECT pg_advisory_unlock($1)", migrateLockKey)
	}()

	riverMigrator, err := rivermigrate.New(riverpgxv5.New(pool), &rivermigrate.Config{Logger: logger})
	if err != nil {
		return fmt.Errorf("river migrator: %w", err)
	}
	res, err := riverMigrator.Migrate(ctx, rivermigrate.DirectionUp, nil)
	if err != nil {
		return fmt.Errorf("river migrations: %w", err)
	}
	for _, v := range res.Versions {
		logger.InfoContext(ctx, "applied river migration", "version", v.Version)
	}

	sqlDB := stdlib.OpenDBFromPool(pool)
	defer sqlDB.Close()
	provider, err := goose.NewProvider(goose.DialectPostgres, sqlDB, Migrations())
	if err != nil {
		return fmt.Errorf("goose provider: %w", err)
	}
	results, err := provider.Up(ctx)
	if err != nil {
		return fmt.Errorf("schema migrations: %w", err)
	}
	for _, r := range results {
		logger.InfoContext(ctx, "applied schema migration", "version", r.Source.Version, "file", r.Source.Path, "duration", r.Duration)
	}
	return nil
}

// MigrationsFingerprint hashes the embedded migrations together with River's
// migration count, so a test template database is rebuilt exactly when the
// schema it holds would differ.
func MigrationsFingerprint() (string, error) {
	h := sha256.New()
	err := fs.WalkDir(Migrations(), ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(Migrations(), path)
		if err != nil {
			return err
		}
		fmt.Fprintf(h, "%s\x00%d\x00", path, len(b))
		h.Write(b)
		return nil
	})
	if err != nil {
		return "", err
	}
	riverMigrator, err := rivermigrate.New(riverpgxv5.New(nil), nil)
	if err != nil {
		return "", err
	}
	for _, m := range riverMigrator.AllVersions() {
		fmt.Fprintf(h, "river\x00%d\x00%s", m.Version, m.SQLUp)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
