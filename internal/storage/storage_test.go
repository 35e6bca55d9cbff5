package storage

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nxg-fitness/nxg/internal/devstack"
)

type testBundle struct {
	s3     *devstack.S3
	client *Client
}

// setup starts the S3 stand-in of cmd/nxg-dev (gofakes3 over a bbolt file)
// and a client for it.
func setup(t *testing.T) *testBundle {
	t.Helper()
	s, err := devstack.StartS3(context.Background(), t.TempDir(), "nxg-test", slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatalf("StartS3: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	c, err := New(context.Background(), configFor(s))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return &testBundle{s3: s, client: c}
}

func configFor(s *devstack.S3) Config {
	return Config{
		Endpoint: s.Endpoint(), Bucket: s.Bucket, Region: s.Region,
		AccessKeyID: s.AccessKeyID, SecretAccessKey: s.SecretAccessKey, UsePathStyle: true,
	}
}

func download(t *testing.T, c *Client, key string) []byte {
	t.Helper()
	u, err := c.PresignGet(context.Background(), key, time.Minute)
	if err != nil {
		t.Fatalf("PresignGet %s: %v", key, err)
	}
	resp, err := http.Get(u)
	if err != nil {
		t.Fatalf("GET %s: %v", key, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: status %d: %s", key, resp.StatusCode, body)
	}
	return body
}

func TestNew(t *testing.T) {
	ctx := context.Background()
	// Keep the developer's own AWS setup out of the test.
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_REGION", "")
	t.Setenv("AWS_DEFAULT_REGION", "")

	for _, tc := range []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{"NoBucket", Config{Endpoint: "http://127.0.0.1:1", Region: "us-east-1"}, "bucket is required"},
		{"HalfCredentials", Config{Bucket: "b", Region: "eu-west-1", AccessKeyID: "AKIA"}, "both"},
		{"AWSWithoutRegion", Config{Bucket: "b"}, "region is required"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := New(ctx, tc.cfg); err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("New(%+v) = %v, want an error containing %q", tc.cfg, err, tc.wantErr)
			}
		})
	}

	t.Run("EndpointDefaultsRegion", func(t *testing.T) {
		b := setup(t)
		cfg := configFor(b.s3)
		cfg.Region = ""
		c, err := New(ctx, cfg)
		if err != nil {
			t.Fatalf("New without a region for a custom endpoint: %v", err)
		}
		if err := c.Ping(ctx); err != nil {
			t.Fatalf("Ping: %v", err)
		}
	})

	t.Run("RealAWSPresignsVirtualHostedURLs", func(t *testing.T) {
		// No request is sent: presigning is local, and shows the client
		// targets AWS in the configured region.
		c, err := New(ctx, Config{Bucket: "nxg-prod", Region: "eu-central-1", AccessKeyID: "AKIAEXAMPLE", SecretAccessKey: "secret"})
		if err != nil {
			t.Fatalf("New: %v", err)
		}
		u, err := c.PresignGet(ctx, "users/u1/a.glb", time.Minute)
		if err != nil {
			t.Fatalf("PresignGet: %v", err)
		}
		if !strings.HasPrefix(u, "https://nxg-prod.s3.eu-central-1.amazonaws.com/users/u1/a.glb?") {
			t.Fatalf("presigned URL = %s, want AWS virtual-hosted style in eu-central-1", u)
		}
	})
}

func TestPing(t *testing.T) {
	b := setup(t)
	ctx := context.Background()
	if err := b.client.Ping(ctx); err != nil {
		t.Fatalf("Ping: %v", err)
	}
	cfg := configFor(b.s3)
	cfg.Bucket = "no-such-bucket"
	c, err := New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Ping(ctx); err == nil || !strings.Contains(err.Error(), "no-such-bucket") {
		t.Fatalf("Ping of a missing bucket = %v, want an error naming it", err)
	}
}

func TestPutHead(t *testing.T) {
	b := setup(t)
	ctx := context.Background()

	t.Run("SeekableBody", func(t *testing.T) {
		body := []byte("avatar bytes")
		if err := b.client.Put(ctx, "users/u1/avatar.glb", "model/gltf-binary", bytes.NewReader(body), int64(len(body))); err != nil {
			t.Fatalf("Put: %v", err)
		}
		info, err := b.client.Head(ctx, "users/u1/avatar.glb")
		if err != nil {
			t.Fatalf("Head: %v", err)
		}
		want := ObjectInfo{Key: "users/u1/avatar.glb", Size: int64(len(body)), ContentType: "model/gltf-binary", ServerSideEncryption: "AES256"}
		if info.Key != want.Key || info.Size != want.Size || info.ContentType != want.ContentType ||
			info.ServerSideEncryption != want.ServerSideEncryption || info.ETag == "" || strings.Contains(info.ETag, `"`) ||
			time.Since(info.LastModified) > time.Minute {
			t.Fatalf("Head = %+v, want %+v with an unquoted ETag and a recent LastModified", info, want)
		}
		if got := download(t, b.client, "users/u1/avatar.glb"); !bytes.Equal(got, body) {
			t.Fatalf("stored %q, want %q", got, body)
		}
	})

	t.Run("StreamedBody", func(t *testing.T) {
		// A one-pass reader, like an upload being proxied, which SigV4 over
		// plain HTTP cannot hash in advance.
		body := strings.Repeat("meal photo ", 10_000)
		stream := io.MultiReader(strings.NewReader(body[:50]), strings.NewReader(body[50:]))
		if err := b.client.Put(ctx, "users/u1/meal.jpg", "image/jpeg", stream, int64(len(body))); err != nil {
			t.Fatalf("Put: %v", err)
		}
		if got := download(t, b.client, "users/u1/meal.jpg"); string(got) != body {
			t.Fatalf("stored %d bytes, want the %d sent", len(got), len(body))
		}
		if info, err := b.client.Head(ctx, "users/u1/meal.jpg"); err != nil || info.ServerSideEncryption != "AES256" {
			t.Fatalf("Head = %+v, %v; want SSE AES256", info, err)
		}
	})

	t.Run("Refusals", func(t *testing.T) {
		if err := b.client.Put(ctx, "", "text/plain", strings.NewReader("x"), 1); err == nil {
			t.Error("Put with an empty key succeeded")
		}
		if err := b.client.Put(ctx, "users/u1/x", "text/plain", strings.NewReader("x"), -1); err == nil {
			t.Error("Put with an unknown size succeeded")
		}
		if err := b.client.Put(ctx, "users/u1/short", "text/plain", strings.NewReader("abc"), 10); err == nil {
			t.Error("Put of a body shorter than its size succeeded")
		}
		if _, err := b.client.Head(ctx, "users/u1/short"); !errors.Is(err, ErrNotFound) {
			t.Errorf("a failed Put left an object behind: Head = %v", err)
		}
	})

	t.Run("HeadMissing", func(t *testing.T) {
		_, err := b.client.Head(ctx, "users/nobody/a.glb")
		if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "users/nobody/a.glb") {
			t.Fatalf("Head of a missing key = %v, want ErrNotFound naming the key", err)
		}
	})
}

func TestPresign(t *testing.T) {
	b := setup(t)
	ctx := context.Background()
	body := []byte(`{"export":"all my data"}`)

	putURL, err := b.client.PresignPut(ctx, "users/u1/export.json", "application/json", int64(len(body)), 15*time.Minute)
	if err != nil {
		t.Fatalf("PresignPut: %v", err)
	}
	u, err := url.Parse(putURL)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	if q.Get("X-Amz-Expires") != "900" {
		t.Fatalf("X-Amz-Expires = %q, want 900 for 15 minutes", q.Get("X-Amz-Expires"))
	}
	// The type and the encryption are signed, so a client cannot change
	// them; UploadHeaders must list exactly what is signed besides host and
	// length.
	signed := strings.Split(q.Get("X-Amz-SignedHeaders"), ";")
	for h := range UploadHeaders("application/json") {
		if !containsFold(signed, h) {
			t.Fatalf("signed headers %v lack %s from UploadHeaders", signed, h)
		}
	}
	for _, h := range signed {
		if _, ok := UploadHeaders("application/json")[http.CanonicalHeaderKey(h)]; !ok && h != "host" && h != "content-length" {
			t.Fatalf("signed header %q is not in UploadHeaders, so clients would not send it", h)
		}
	}

	req, err := http.NewRequestWithContext(ctx, http.MethodPut, putURL, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header = UploadHeaders("application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("PUT: %v", err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("presigned PUT status %d", resp.StatusCode)
	}
	info, err := b.client.Head(ctx, "users/u1/export.json")
	if err != nil || info.Size != int64(len(body)) || info.ContentType != "application/json" || info.ServerSideEncryption != "AES256" {
		t.Fatalf("Head after presigned PUT = %+v, %v", info, err)
	}

	getURL, err := b.client.PresignGet(ctx, "users/u1/export.json", time.Minute)
	if err != nil {
		t.Fatalf("PresignGet: %v", err)
	}
	if g, _ := url.Parse(getURL); g.Query().Get("X-Amz-Expires") != "60" || !strings.HasSuffix(g.Path, "/nxg-test/users/u1/export.json") {
		t.Fatalf("presigned GET URL = %s, want path-style with X-Amz-Expires=60", getURL)
	}
	if got := download(t, b.client, "users/u1/export.json"); !bytes.Equal(got, body) {
		t.Fatalf("downloaded %q, want %q", got, body)
	}

	if _, err := b.client.PresignPut(ctx, "", "text/plain", 1, time.Minute); err == nil {
		t.Error("PresignPut with an empty key succeeded")
	}
	if _, err := b.client.PresignGet(ctx, "", time.Minute); err == nil {
		t.Error("PresignGet with an empty key succeeded")
	}
}

func TestDeletePrefix(t *testing.T) {
	b := setup(t)
	ctx := context.Background()
	// Pages of two keys make the paging loop run several times.
	b.client.listPageSize = 2

	put := func(key string) {
		t.Helper()
		if err := b.client.Put(ctx, key, "text/plain", strings.NewReader(key), int64(len(key))); err != nil {
			t.Fatalf("Put %s: %v", key, err)
		}
	}
	for i := range 5 {
		put(fmt.Sprintf("users/u1/meals/%d.jpg", i))
	}
	put("users/u1/avatar.glb")
	put("users/u10/avatar.glb") // shares "users/u1" but not "users/u1/"

	n, err := b.client.DeletePrefix(ctx, "users/u1/")
	if err != nil || n != 6 {
		t.Fatalf("DeletePrefix users/u1/ = %d, %v; want 6", n, err)
	}
	for _, key := range []string{"users/u1/avatar.glb", "users/u1/meals/4.jpg"} {
		if _, err := b.client.Head(ctx, key); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Head %s after erasure = %v, want ErrNotFound", key, err)
		}
	}
	if _, err := b.client.Head(ctx, "users/u10/avatar.glb"); err != nil {
		t.Fatalf("erasing u1 touched u10: %v", err)
	}

	if n, err := b.client.DeletePrefix(ctx, "users/u1/"); err != nil || n != 0 {
		t.Fatalf("second DeletePrefix = %d, %v; want 0, nil", n, err)
	}
	if _, err := b.client.DeletePrefix(ctx, ""); err == nil {
		t.Fatal("DeletePrefix with an empty prefix succeeded; it would empty the bucket")
	}
	if _, err := b.client.Head(ctx, "users/u10/avatar.glb"); err != nil {
		t.Fatalf("refused DeletePrefix still deleted: %v", err)
	}
}

func containsFold(list []string, s string) bool {
	for _, v := range list {
		if strings.EqualFold(v, s) {
			return true
		}
	}
	return false
}
