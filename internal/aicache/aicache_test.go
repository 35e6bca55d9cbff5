package aicache_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/nxg-fitness/nxg/internal/aicache"
	"github.com/nxg-fitness/nxg/internal/testkit"
	"github.com/nxg-fitness/nxg/internal/testkit/mongotest"
)

type plan struct {
	Name string `json:"name"`
	Days int    `json:"days"`
}

func TestCache(t *testing.T) {
	d := testkit.NewDatabase(t)
	db := mongotest.New(t, d.URL)
	ctx := context.Background()
	cache := aicache.New(db, "workout_plans")
	now := time.Date(2026, 11, 26, 9, 0, 0, 0, time.UTC)
	cache.Now = func() time.Time { return now }
	user, other := uuid.NewString(), uuid.NewString()

	key, err := aicache.Key(struct{ Goal string }{"strength"}, map[string]int{"b": 2, "a": 1})
	if err != nil {
		t.Fatal(err)
	}
	same, _ := aicache.Key(struct{ Goal string }{"strength"}, map[string]int{"a": 1, "b": 2})
	different, _ := aicache.Key(struct{ Goal string }{"endurance"}, map[string]int{"a": 1, "b": 2})
	if key != same || key == different || len(key) != 64 {
		t.Fatalf("keys: %s, %s, %s: want equal parts to hash equal and different ones not", key, same, different)
	}
	if _, err := aicache.Key(func() {}); err == nil {
		t.Fatal("a part that cannot be encoded gave a key")
	}

	if _, ok, err := cache.Get(ctx, key); err != nil || ok {
		t.Fatalf("empty cache Get = %v, %v", ok, err)
	}
	if _, ok, err := cache.Latest(ctx, user); err != nil || ok {
		t.Fatalf("empty cache Latest = %v, %v", ok, err)
	}

	if _, err := cache.Put(ctx, key, user, plan{Name: "3-day strength", Days: 3}, time.Hour); err != nil {
		t.Fatal(err)
	}
	e, ok, err := cache.Get(ctx, key)
	if err != nil || !ok {
		t.Fatalf("Get after Put = %v, %v", ok, err)
	}
	var got plan
	if err := e.Decode(&got); err != nil || got != (plan{"3-day strength", 3}) || e.UserID != user || !e.ExpiresAt.Equal(now.Add(time.Hour)) {
		t.Fatalf("entry %+v decoded to %+v (%v)", e, got, err)
	}

	// A later answer for the same user is the latest; another user's is not.
	now = now.Add(time.Minute)
	key2, _ := aicache.Key("second")
	if _, err := cache.Put(ctx, key2, user, plan{Name: "4-day", Days: 4}, time.Hour); err != nil {
		t.Fatal(err)
	}
	now = now.Add(time.Minute)
	if _, err := cache.Put(ctx, "someone-else", other, plan{Name: "theirs"}, time.Hour); err != nil {
		t.Fatal(err)
	}
	latest, ok, err := cache.Latest(ctx, user)
	if err != nil || !ok || latest.Key != key2 {
		t.Fatalf("Latest = %+v, %v, %v; want the second answer", latest, ok, err)
	}

	// Past its expiry an answer is not served from Get, but is still the
	// stale fallback.
	now = now.Add(2 * time.Hour)
	if _, ok, err := cache.Get(ctx, key); err != nil || ok {
		t.Fatalf("Get of an expired answer = %v, %v; want a miss", ok, err)
	}
	if latest, ok, err := cache.Latest(ctx, user); err != nil || !ok || latest.Key != key2 {
		t.Fatalf("Latest after expiry = %+v, %v, %v; want the stale answer", latest, ok, err)
	}

	// Put replaces: the same key stored again is fresh.
	if _, err := cache.Put(ctx, key, user, plan{Name: "again", Days: 3}, time.Hour); err != nil {
		t.Fatal(err)
	}
	if e, ok, _ := cache.Get(ctx, key); !ok || e.Decode(&got) != nil || got.Name != "again" {
		t.Fatalf("after replacing, Get = %+v, %v", got, ok)
	}

	all, err := cache.ForUser(ctx, user)
	if err != nil || len(all) != 2 || all[0].Key != key {
		t.Fatalf("ForUser = %d entries (%v), want 2, newest first", len(all), err)
	}
	if bad := (aicache.Entry{Key: "k", Body: []byte("{")}).Decode(&got); bad == nil {
		t.Fatal("decoding a broken body succeeded")
	}
}
