package mealdetector_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/http"
	"testing"
	"time"

	"github.com/nxg-fitness/nxg/internal/devstack"
	"github.com/nxg-fitness/nxg/internal/integrations"
	md "github.com/nxg-fitness/nxg/internal/integrations/mealdetector"
	"github.com/nxg-fitness/nxg/internal/storage"
	"github.com/nxg-fitness/nxg/internal/testkit"
)

type testBundle struct {
	sim    *devstack.MealDetector
	client *md.Client
	store  *storage.Client
}

func setup(t *testing.T) *testBundle {
	t.Helper()
	ctx := context.Background()
	logger := testkit.Logger(t, slog.LevelInfo)
	sim, err := devstack.StartMealDetector(logger)
	if err != nil {
		t.Fatalf("StartMealDetector: %v", err)
	}
	t.Cleanup(func() { _ = sim.Close() })
	s3, err := devstack.StartS3(ctx, t.TempDir(), "nxg-test", logger)
	if err != nil {
		t.Fatalf("StartS3: %v", err)
	}
	t.Cleanup(func() { _ = s3.Close() })
	store, err := storage.New(ctx, storage.Config{
		Endpoint: s3.Endpoint(), Bucket: s3.Bucket, Region: s3.Region,
		AccessKeyID: s3.AccessKeyID, SecretAccessKey: s3.SecretAccessKey, UsePathStyle: true,
	})
	if err != nil {
		t.Fatalf("storage.New: %v", err)
	}
	base, err := integrations.New(integrations.Config{
		Name: md.Name, BaseURL: sim.URL(), APIKey: sim.APIKey(), BackoffInitial: time.Millisecond, BackoffMax: 5 * time.Millisecond,
	}, nil)
	if err != nil {
		t.Fatalf("integrations.New: %v", err)
	}
	return &testBundle{sim: sim, client: md.New(base), store: store}
}

// upload puts a photo into S3 and returns the request for a presigned GET
// of it, as the AnalyzeMealPhoto job will.
func (b *testBundle) upload(t *testing.T, key, contentType string, photo []byte) md.DetectRequest {
	t.Helper()
	ctx := context.Background()
	if err := b.store.Put(ctx, key, contentType, bytes.NewReader(photo), int64(len(photo))); err != nil {
		t.Fatalf("Put: %v", err)
	}
	u, err := b.store.PresignGet(ctx, key, time.Minute)
	if err != nil {
		t.Fatalf("PresignGet: %v", err)
	}
	return md.DetectRequest{ImageURL: u, ContentType: contentType, SizeBytes: int64(len(photo))}
}

func TestDetect(t *testing.T) {
	ctx := context.Background()
	b := setup(t)
	photo, err := devstack.FakeMealPhoto(md.ContentTypeJPEG, "dinner")
	if err != nil {
		t.Fatal(err)
	}
	req := b.upload(t, "users/u1/meals/dinner.jpg", md.ContentTypeJPEG, photo)

	d, err := b.client.Detect(ctx, "analysis-1", req)
	if err != nil {
		t.Fatalf("Detect: %v", err)
	}
	if len(d.Items) == 0 {
		t.Fatalf("detection = %+v, want foods", d)
	}
	// Asking again under the same key replays the first answer.
	again, err := b.client.Detect(ctx, "analysis-1", req)
	if err != nil || again.DetectionID != d.DetectionID {
		t.Fatalf("replay = %+v, %v", again, err)
	}
	if reqs := b.sim.Requests(); len(reqs) != 2 || reqs[0].Replayed || !reqs[1].Replayed {
		t.Fatalf("simulator saw %+v, want the second call replayed", reqs)
	}

	// A photo that is not what it claims: the service's 422, not retried.
	bad := b.upload(t, "users/u1/meals/bad.jpg", md.ContentTypeJPEG, []byte("plain text"))
	var ie *integrations.Error
	if _, err := b.client.Detect(ctx, "analysis-2", bad); !errors.As(err, &ie) ||
		ie.Status != http.StatusUnprocessableEntity || ie.Code != "image_unreadable" || ie.Retryable {
		t.Fatalf("Detect of a text file = %v, want a final 422 image_unreadable", err)
	}

	b.sim.SetKnobs(devstack.SimKnobs{Absurd: true})
	var fe *md.FieldError
	if _, err := b.client.Detect(ctx, "analysis-3", req); !errors.Is(err, md.ErrInvalidResponse) || !errors.As(err, &fe) {
		t.Fatalf("Detect against an absurd detector = %v, want ErrInvalidResponse", err)
	}
	t.Logf("rejected: %v", err)
}
