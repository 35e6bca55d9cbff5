// Package mongotest gives tests a MongoDB API: FerretDB over a test's
// PostgreSQL database. It is a package of its own, apart from testkit,
// because it links FerretDB, which only the tests that use MongoDB should
// pay for in build time.
package mongotest

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/nxg-fitness/nxg/internal/devstack"
	"github.com/nxg-fitness/nxg/internal/testkit"
)

// New starts FerretDB (the MongoDB API the dev server uses) over the
// PostgreSQL database at databaseURL, usually a NewDatabase's URL so that
// the test's documents vanish with its database, and returns a database
// of a connected client. Both stop when the test ends.
func New(t testing.TB, databaseURL string) *mongo.Database {
	t.Helper()
	m, err := devstack.StartMongo(context.Background(), databaseURL, testkit.Logger(t, slog.LevelWarn))
	if err != nil {
		t.Fatalf("start FerretDB over the test database: %v (is PostgreSQL running? %s)", err, testkit.PostgresHint)
	}
	t.Cleanup(func() {
		if err := m.Close(); err != nil {
			t.Errorf("close FerretDB: %v", err)
		}
	})
	c, err := mongo.Connect(options.Client().ApplyURI(m.URI()).SetTimeout(15 * time.Second))
	if err != nil {
		t.Fatalf("connect to FerretDB: %v", err)
	}
	// Registered after FerretDB's cleanup, so it runs first: FerretDB waits
	// for connected clients before it stops.
	t.Cleanup(func() { _ = c.Disconnect(context.Background()) })
	return c.Database("nxg")
}
