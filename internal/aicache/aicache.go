// Package aicache keeps outside AI services' answers in MongoDB (FR4, FR5):
// workout plans and meal plans, keyed by a hash of everything the answer
// depends on, so that an identical request within the expiry is answered
// without calling the service again, and so that when the service is down
// the member's most recent answer can still be served, marked stale.
//
// Each kind of answer has its own collection (listed in
// jobs.CacheCollections, which the cleanup job and the erasure walk). A
// document is
//
//	{_id: <key>, userId: <uuid>, body: <JSON of the answer>,
//	 createdAt: <date>, expiresAt: <date>}
//
// MongoDB would drop expired documents with a TTL index; FerretDB has none,
// so the cache_cleanup job deletes them, and Get ignores a document past
// its expiry in the meantime. Latest deliberately does not: a stale answer
// is better than none when the service is down.
package aicache

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// Field names of a cache document. expiresAt is jobs.CacheExpiresAtField
// and userId the field erasure deletes by.
const (
	fieldUser      = "userId"
	fieldCreatedAt = "createdAt"
	fieldExpiresAt = "expiresAt"
)

// Cache is one collection of cached answers.
type Cache struct {
	coll *mongo.Collection
	// Now is the clock; tests set it.
	Now func() time.Time
}

// New returns the cache kept in db's collection.
func New(db *mongo.Database, collection string) *Cache {
	return &Cache{coll: db.Collection(collection), Now: time.Now}
}

// Entry is one cached answer.
type Entry struct {
	Key       string
	UserID    string
	Body      json.RawMessage
	CreatedAt time.Time
	ExpiresAt time.Time
}

// Decode unmarshals the cached answer into v.
func (e Entry) Decode(v any) error {
	if err := json.Unmarshal(e.Body, v); err != nil {
		return fmt.Errorf("aicache: decode cached answer %s: %w", e.Key, err)
	}
	return nil
}

// document is an Entry as stored. The body is kept as a JSON string
// rather than a BSON document so that any answer round-trips exactly,
// whatever its shape.
type document struct {
	Key       string    `bson:"_id"`
	UserID    string    `bson:"userId"`
	Body      string    `bson:"body"`
	CreatedAt time.Time `bson:"createdAt"`
	ExpiresAt time.Time `bson:"expiresAt"`
}

func (d document) entry() Entry {
	return Entry{Key: d.Key, UserID: d.UserID, Body: json.RawMessage(d.Body), CreatedAt: d.CreatedAt, ExpiresAt: d.ExpiresAt}
}

// Key hashes the parts an answer depends on (the normalised request and
// the profile snapshot the service was given) into a cache key. Parts are
// encoded as JSON, so struct fields count in their declared order and map
// keys sorted: callers normalise (sort lists, trim text) before calling.
func Key(parts ...any) (string, error) {
	h := sha256.New()
	enc := json.NewEncoder(h)
	for _, p := range parts {
		if err := enc.Encode(p); err != nil {
			return "", fmt.Errorf("aicache: key part: %w", err)
		}
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// Get returns the unexpired answer stored under key, if any.
func (c *Cache) Get(ctx context.Context, key string) (Entry, bool, error) {
	var d document
	err := c.coll.FindOne(ctx, bson.D{
		{Key: "_id", Value: key},
		{Key: fieldExpiresAt, Value: bson.D{{Key: "$gt", Value: c.Now()}}},
	}).Decode(&d)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return Entry{}, false, nil
	}
	if err != nil {
		return Entry{}, false, fmt.Errorf("aicache: get %s: %w", key, err)
	}
	return d.entry(), true, nil
}

// Put stores answer under key for userID until ttl from now, replacing
// what was there.
func (c *Cache) Put(ctx context.Context, key, userID string, answer any, ttl time.Duration) (Entry, error) {
	body, err := json.Marshal(answer)
	if err != nil {
		return Entry{}, fmt.Errorf("aicache: encode answer: %w", err)
	}
	now := c.Now().UTC().Truncate(time.Millisecond) // BSON dates hold milliseconds
	d := document{Key: key, UserID: userID, Body: string(body), CreatedAt: now, ExpiresAt: now.Add(ttl)}
	_, err = c.coll.ReplaceOne(ctx, bson.D{{Key: "_id", Value: key}}, d, options.Replace().SetUpsert(true))
	if err != nil {
		return Entry{}, fmt.Errorf("aicache: put %s: %w", key, err)
	}
	return d.entry(), nil
}

// Latest returns userID's most recently stored answer, expired or not: the
// fallback served, marked stale, while the service cannot be reached.
func (c *Cache) Latest(ctx context.Context, userID string) (Entry, bool, error) {
	var d document
	err := c.coll.FindOne(ctx, bson.D{{Key: fieldUser, Value: userID}},
		options.FindOne().SetSort(bson.D{{Key: fieldCreatedAt, Value: -1}, {Key: "_id", Value: 1}})).Decode(&d)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return Entry{}, false, nil
	}
	if err != nil {
		return Entry{}, false, fmt.Errorf("aicache: latest for user: %w", err)
	}
	return d.entry(), true, nil
}

// ForUser returns every answer stored for userID, newest first, for the
// member's data export.
func (c *Cache) ForUser(ctx context.Context, userID string) ([]Entry, error) {
	cur, err := c.coll.Find(ctx, bson.D{{Key: fieldUser, Value: userID}},
		options.Find().SetSort(bson.D{{Key: fieldCreatedAt, Value: -1}, {Key: "_id", Value: 1}}))
	if err != nil {
		return nil, fmt.Errorf("aicache: list for user: %w", err)
	}
	var docs []document
	if err := cur.All(ctx, &docs); err != nil {
		return nil, fmt.Errorf("aicache: list for user: %w", err)
	}
	out := make([]Entry, len(docs))
	for i, d := range docs {
		out[i] = d.entry()
	}
	return out, nil
}
