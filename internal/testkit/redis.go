package testkit

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisHint tells a developer how to start the Redis the tests need.
const RedisHint = "start it with `redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save \"\" --appendonly no`, " +
	"or point TEST_REDIS_URL at one"

// Redis is one test's view of the shared Redis server: a client and a key
// prefix no other test uses. Code under test takes the prefix in its
// constructor, so parallel tests never see each other's keys.
type Redis struct {
	Client *redis.Client
	URL    string
	Prefix string
}

// NewRedis connects to the test Redis and deletes the test's keys when it
// ends. It fails the test at once, with the way to fix it, when no Redis
// answers.
func NewRedis(t testing.TB) *Redis {
	t.Helper()
	url := os.Getenv("TEST_REDIS_URL")
	if url == "" {
		url = "redis://127.0.0.1:6379/0"
	}
	opts, err := redis.ParseURL(url)
	if err != nil {
		t.Fatalf("TEST_REDIS_URL: %v", err)
	}
	client := redis.NewClient(opts)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := client.Ping(ctx).Err(); err != nil {
		client.Close()
		t.Fatalf("Redis is not answering at %s: %v\n%s", url, err, RedisHint)
	}
	var b [6]byte
	_, _ = rand.Read(b[:])
	prefix := "test:" + hex.EncodeToString(b[:]) + ":"
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		iter := client.Scan(ctx, 0, prefix+"*", 500).Iterator()
		for iter.Next(ctx) {
			client.Del(ctx, iter.Val())
		}
		client.Close()
	})
	return &Redis{Client: client, URL: url, Prefix: prefix}
}
