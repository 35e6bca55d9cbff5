// Command nxg is the NXG backend's production binary.
//
//	nxg serve               run the API, the ops endpoints and the River workers
//	nxg migrate             apply database migrations and exit
//	nxg admin create-user   create (or change the role of) an account; password on stdin
//	nxg audit verify        check the audit trail's hash chain
//
// Every setting comes from environment variables (see README.md); a missing
// or malformed one stops start-up with a message naming it.
package main

import (
	_ "time/tzdata" // time zones must load on hosts without zoneinfo (distroless, scratch)

	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/caarlos0/env/v11"

	"github.com/nxg-fitness/nxg/db"
	"github.com/nxg-fitness/nxg/internal/app"
	"github.com/nxg-fitness/nxg/internal/config"
	"github.com/nxg-fitness/nxg/internal/logging"
)

const usage = `usage: nxg <command>

commands:
  serve               run the API, the ops endpoints and the River workers
  migrate             apply database migrations (ours and River's) and exit
  admin create-user   create a member, staff or admin account (password on stdin);
                      with --update-role, change an existing account's role
  audit verify        check the audit trail's hash chain, print its head hash;
                      exits non-zero when the trail is broken
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], env.ToMap(os.Environ()), os.Stdin, os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, errUsage) {
			fmt.Fprintln(os.Stderr, "nxg:", err)
		}
		os.Exit(1)
	}
}

var errUsage = errors.New("usage")

// run is main without the process: it takes its arguments, environment,
// input and outputs, so tests can drive it.
func run(ctx context.Context, args []string, environ map[string]string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) > 0 {
		switch args[0] {
		case "admin":
			return runAdmin(ctx, args[1:], environ, stdin, stdout, stderr)
		case "audit":
			return runAudit(ctx, args[1:], environ, stdout, stderr)
		}
	}
	if len(args) != 1 || (args[0] != "serve" && args[0] != "migrate") {
		fmt.Fprint(stderr, usage)
		return errUsage
	}
	cfg, err := config.Parse(environ)
	if err != nil {
		return err
	}
	logger := logging.New(stdout, cfg.LogLevel)
	logger.Info("configuration", "config", cfg, "command", args[0], "version", app.Version)

	switch args[0] {
	case "migrate":
		pool, err := db.Open(ctx, cfg.DatabaseURL.Reveal(), db.PoolConfig{ApplicationName: "nxg-migrate"})
		if err != nil {
			return err
		}
		defer pool.Close()
		if err := db.Migrate(ctx, pool, logger); err != nil {
			return err
		}
		logger.Info("database is up to date")
		return nil
	default:
		a, err := app.New(ctx, cfg, logger)
		if err != nil {
			return err
		}
		return a.Run(ctx)
	}
}
