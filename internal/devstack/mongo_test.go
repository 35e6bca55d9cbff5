package devstack_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/nxg-fitness/nxg/internal/devstack"
)

type workoutPlan struct {
	ID        string    `bson:"_id"`
	UserID    string    `bson:"userId"`
	Days      int       `bson:"days"`
	Exercises []string  `bson:"exercises"`
	ExpiresAt time.Time `bson:"expiresAt"`
}

func startMongo(t *testing.T, databaseURL string) *devstack.Mongo {
	t.Helper()
	m, err := devstack.StartMongo(context.Background(), databaseURL, testLogger(t))
	if err != nil {
		t.Fatalf("StartMongo: %v", err)
	}
	t.Cleanup(func() {
		if err := m.Close(); err != nil {
			t.Errorf("Mongo.Close: %v", err)
		}
	})
	return m
}

func mongoClient(t *testing.T, uri string) *mongo.Client {
	t.Helper()
	c, err := mongo.Connect(options.Client().ApplyURI(uri).SetTimeout(15 * time.Second))
	if err != nil {
		t.Fatalf("mongo.Connect(%s): %v", uri, err)
	}
	// Registered after the server's cleanup, so it runs first: FerretDB
	// otherwise waits for connected clients before it stops.
	t.Cleanup(func() { _ = c.Disconnect(context.Background()) })
	return c
}

// TestMongo drives FerretDB with the official MongoDB driver through the
// CRUD a cache needs, then checks the data really lives in PostgreSQL and is
// shared by a second instance, as with two dev servers on one database.
func TestMongo(t *testing.T) {
	ctx := context.Background()
	dbURL := testDatabaseURL(t)
	m := startMongo(t, dbURL)
	if !strings.HasPrefix(m.URI(), "mongodb://127.0.0.1:") {
		t.Fatalf("URI() = %q, want a loopback mongodb:// URI", m.URI())
	}
	plans := mongoClient(t, m.URI()).Database("nxg").Collection("workout_plans")
	expires := time.Now().Add(time.Hour).UTC().Truncate(time.Millisecond)

	// Insert.
	if _, err := plans.InsertOne(ctx, workoutPlan{ID: "p1", UserID: "u1", Days: 3, Exercises: []string{"squat", "row"}, ExpiresAt: expires}); err != nil {
		t.Fatalf("InsertOne: %v", err)
	}
	if _, err := plans.InsertMany(ctx, []any{
		workoutPlan{ID: "p2", UserID: "u1", Days: 5, ExpiresAt: expires},
		workoutPlan{ID: "p3", UserID: "u2", Days: 4, ExpiresAt: expires},
	}); err != nil {
		t.Fatalf("InsertMany: %v", err)
	}
	_, err := plans.InsertOne(ctx, workoutPlan{ID: "p1", UserID: "u9"})
	if !mongo.IsDuplicateKeyError(err) {
		t.Fatalf("InsertOne with an existing _id = %v, want a duplicate key error", err)
	}

	// Find one, and find many with a filter and a sort.
	var got workoutPlan
	if err := plans.FindOne(ctx, bson.D{{Key: "_id", Value: "p1"}}).Decode(&got); err != nil {
		t.Fatalf("FindOne p1: %v", err)
	}
	if got.UserID != "u1" || got.Days != 3 || strings.Join(got.Exercises, ",") != "squat,row" || !got.ExpiresAt.Equal(expires) {
		t.Fatalf("FindOne p1 = %+v, want the inserted document", got)
	}
	cur, err := plans.Find(ctx, bson.D{{Key: "userId", Value: "u1"}}, options.Find().SetSort(bson.D{{Key: "days", Value: -1}}))
	if err != nil {
		t.Fatalf("Find userId=u1: %v", err)
	}
	var u1 []workoutPlan
	if err := cur.All(ctx, &u1); err != nil {
		t.Fatalf("read cursor: %v", err)
	}
	if len(u1) != 2 || u1[0].ID != "p2" || u1[1].ID != "p1" {
		t.Fatalf("Find userId=u1 sorted by days desc = %+v, want p2 then p1", u1)
	}

	// Update.
	res, err := plans.UpdateOne(ctx, bson.D{{Key: "_id", Value: "p1"}}, bson.D{{Key: "$set", Value: bson.D{{Key: "days", Value: 6}}}})
	if err != nil {
		t.Fatalf("UpdateOne: %v", err)
	}
	if res.MatchedCount != 1 || res.ModifiedCount != 1 {
		t.Fatalf("UpdateOne matched %d, modified %d; want 1, 1", res.MatchedCount, res.ModifiedCount)
	}
	if err := plans.FindOne(ctx, bson.D{{Key: "_id", Value: "p1"}}).Decode(&got); err != nil || got.Days != 6 {
		t.Fatalf("p1 after update: days = %d, %v; want 6", got.Days, err)
	}
	// Expired entries are what the cache cleanup job deletes, by expiresAt.
	n, err := plans.CountDocuments(ctx, bson.D{{Key: "expiresAt", Value: bson.D{{Key: "$lt", Value: time.Now().Add(2 * time.Hour)}}}})
	if err != nil || n != 3 {
		t.Fatalf("count expiring within 2h = %d, %v; want 3", n, err)
	}

	// Delete.
	del, err := plans.DeleteOne(ctx, bson.D{{Key: "_id", Value: "p3"}})
	if err != nil || del.DeletedCount != 1 {
		t.Fatalf("DeleteOne p3: deleted %v, %v; want 1", del, err)
	}
	if err := plans.FindOne(ctx, bson.D{{Key: "_id", Value: "p3"}}).Err(); err != mongo.ErrNoDocuments {
		t.Fatalf("FindOne p3 after delete = %v, want ErrNoDocuments", err)
	}

	// FerretDB keeps each MongoDB database as a schema of the PostgreSQL
	// database it was given.
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatalf("connect to test database: %v", err)
	}
	defer conn.Close(ctx)
	var schemas int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM information_schema.schemata WHERE schema_name = 'nxg'").Scan(&schemas); err != nil || schemas != 1 {
		t.Fatalf("schema nxg in the test database: count %d, %v; want 1", schemas, err)
	}

	// A second instance on the same database, running at the same time in
	// the same process, sees the same data.
	m2 := startMongo(t, dbURL)
	if m2.URI() == m.URI() {
		t.Fatalf("second instance has the same URI %s, want its own port", m2.URI())
	}
	plans2 := mongoClient(t, m2.URI()).Database("nxg").Collection("workout_plans")
	if n, err := plans2.CountDocuments(ctx, bson.D{}); err != nil || n != 2 {
		t.Fatalf("second instance counts %d documents, %v; want 2", n, err)
	}
}

func TestStartMongoUnreachablePostgres(t *testing.T) {
	_, err := devstack.StartMongo(context.Background(), "postgres://postgres@127.0.0.1:1/nxg?connect_timeout=2", testLogger(t))
	if err == nil || !strings.Contains(err.Error(), "PostgreSQL is not usable") {
		t.Fatalf("StartMongo with an unreachable PostgreSQL = %v, want an error naming PostgreSQL", err)
	}
	if _, err := devstack.StartMongo(context.Background(), "", testLogger(t)); err == nil {
		t.Fatal("StartMongo without a database URL succeeded, want an error")
	}
}
