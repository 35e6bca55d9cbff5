package devstack_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nxg-fitness/nxg/internal/devstack"
	"github.com/nxg-fitness/nxg/internal/storage"
)

func startS3(t *testing.T, dir string) *devstack.S3 {
	t.Helper()
	s, err := devstack.StartS3(context.Background(), dir, "nxg-test", testLogger(t))
	if err != nil {
		t.Fatalf("StartS3: %v", err)
	}
	return s
}

func storageFor(t *testing.T, s *devstack.S3) *storage.Client {
	t.Helper()
	c, err := storage.New(context.Background(), storage.Config{
		Endpoint:        s.Endpoint(),
		Bucket:          s.Bucket,
		Region:          s.Region,
		AccessKeyID:     s.AccessKeyID,
		SecretAccessKey: s.SecretAccessKey,
		UsePathStyle:    true,
	})
	if err != nil {
		t.Fatalf("storage.New: %v", err)
	}
	return c
}

// TestS3 runs the production storage client against the stand-in: encrypted
// puts, presigned upload and download over plain HTTP, prefix erasure, and
// data that outlives a restart.
func TestS3(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := startS3(t, dir)
	closed := false
	t.Cleanup(func() {
		if !closed {
			_ = s.Close()
		}
	})
	if s.Bucket != "nxg-test" || s.Region == "" || s.AccessKeyID == "" || s.SecretAccessKey == "" {
		t.Fatalf("S3 fields = %+v, want the bucket and non-empty region and keys", s)
	}
	c := storageFor(t, s)
	if err := c.Ping(ctx); err != nil {
		t.Fatalf("Ping: the stand-in did not create its bucket: %v", err)
	}

	// Put with server-side encryption, seen again through Head.
	avatar := []byte("glTF binary avatar")
	if err := c.Put(ctx, "users/u1/avatar.glb", "model/gltf-binary", bytes.NewReader(avatar), int64(len(avatar))); err != nil {
		t.Fatalf("Put: %v", err)
	}
	info, err := c.Head(ctx, "users/u1/avatar.glb")
	if err != nil {
		t.Fatalf("Head: %v", err)
	}
	if info.Size != int64(len(avatar)) || info.ContentType != "model/gltf-binary" || info.ServerSideEncryption != "AES256" || info.ETag == "" {
		t.Fatalf("Head = %+v, want size %d, type model/gltf-binary, SSE AES256 and an ETag", info, len(avatar))
	}
	if _, err := c.Head(ctx, "users/u1/missing.glb"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("Head of a missing key = %v, want ErrNotFound", err)
	}

	// Presigned PUT, then presigned GET, with nothing but net/http.
	photo := []byte("\xff\xd8\xff jpeg bytes")
	putURL, err := c.PresignPut(ctx, "users/u1/meals/1.jpg", "image/jpeg", int64(len(photo)), 5*time.Minute)
	if err != nil {
		t.Fatalf("PresignPut: %v", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, putURL, bytes.NewReader(photo))
	if err != nil {
		t.Fatal(err)
	}
	req.Header = storage.UploadHeaders("image/jpeg")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("presigned PUT: %v", err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("presigned PUT status = %d, want 200", resp.StatusCode)
	}
	if info, err := c.Head(ctx, "users/u1/meals/1.jpg"); err != nil || info.ServerSideEncryption != "AES256" || info.ContentType != "image/jpeg" {
		t.Fatalf("Head after presigned PUT = %+v, %v; want SSE AES256 and image/jpeg", info, err)
	}
	getURL, err := c.PresignGet(ctx, "users/u1/meals/1.jpg", time.Minute)
	if err != nil {
		t.Fatalf("PresignGet: %v", err)
	}
	if got := httpGet(t, getURL); !bytes.Equal(got, photo) {
		t.Fatalf("presigned GET body = %q, want %q", got, photo)
	}

	// Erasure deletes one user's objects and nobody else's.
	other := []byte("u2's export")
	if err := c.Put(ctx, "users/u2/export.zip", "application/zip", bytes.NewReader(other), int64(len(other))); err != nil {
		t.Fatalf("Put u2: %v", err)
	}
	n, err := c.DeletePrefix(ctx, "users/u1/")
	if err != nil || n != 2 {
		t.Fatalf("DeletePrefix users/u1/ = %d, %v; want 2", n, err)
	}
	for _, key := range []string{"users/u1/avatar.glb", "users/u1/meals/1.jpg"} {
		if _, err := c.Head(ctx, key); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("Head %s after erasure = %v, want ErrNotFound", key, err)
		}
	}

	// bbolt holds the data directory's lock: a second server on it fails
	// with a clear error instead of hanging.
	if _, err := devstack.StartS3(ctx, dir, "nxg-test", testLogger(t)); err == nil || !strings.Contains(err.Error(), "locked") {
		t.Fatalf("second StartS3 on the same directory = %v, want a 'locked' error", err)
	}

	// Objects persist across a restart on the same directory.
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	closed = true
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := http.Get(s.Endpoint()); err == nil {
		t.Fatal("the stand-in still answers after Close")
	}
	s2 := startS3(t, dir)
	t.Cleanup(func() { _ = s2.Close() })
	c2 := storageFor(t, s2)
	getURL, err = c2.PresignGet(ctx, "users/u2/export.zip", time.Minute)
	if err != nil {
		t.Fatalf("PresignGet after restart: %v", err)
	}
	if got := httpGet(t, getURL); !bytes.Equal(got, other) {
		t.Fatalf("after restart users/u2/export.zip = %q, want %q", got, other)
	}
}

func httpGet(t *testing.T, url string) []byte {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read %s: %v", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: status %d: %s", url, resp.StatusCode, body)
	}
	return body
}
