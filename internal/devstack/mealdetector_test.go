package devstack_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/nxg-fitness/nxg/internal/devstack"
	md "github.com/nxg-fitness/nxg/internal/integrations/mealdetector"
	"github.com/nxg-fitness/nxg/internal/storage"
)

func startMealDetector(t *testing.T) *devstack.MealDetector {
	t.Helper()
	s, err := devstack.StartMealDetector(testLogger(t))
	if err != nil {
		t.Fatalf("StartMealDetector: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

// photoStore is the S3 stand-in with a client, as the AnalyzeMealPhoto job
// sees it: photos are uploaded, and the detector gets a presigned GET URL.
type photoStore struct {
	client *storage.Client
}

func startPhotoStore(t *testing.T) *photoStore {
	t.Helper()
	ctx := context.Background()
	s3, err := devstack.StartS3(ctx, t.TempDir(), "nxg-test", testLogger(t))
	if err != nil {
		t.Fatalf("StartS3: %v", err)
	}
	t.Cleanup(func() { _ = s3.Close() })
	c, err := storage.New(ctx, storage.Config{
		Endpoint: s3.Endpoint(), Bucket: s3.Bucket, Region: s3.Region,
		AccessKeyID: s3.AccessKeyID, SecretAccessKey: s3.SecretAccessKey, UsePathStyle: true,
	})
	if err != nil {
		t.Fatalf("storage.New: %v", err)
	}
	return &photoStore{client: c}
}

// upload stores a photo and returns the detection request for it.
func (p *photoStore) upload(t *testing.T, key, contentType string, photo []byte) md.DetectRequest {
	t.Helper()
	ctx := context.Background()
	if err := p.client.Put(ctx, key, contentType, bytes.NewReader(photo), int64(len(photo))); err != nil {
		t.Fatalf("Put %s: %v", key, err)
	}
	u, err := p.client.PresignGet(ctx, key, time.Minute)
	if err != nil {
		t.Fatalf("PresignGet: %v", err)
	}
	return md.DetectRequest{ImageURL: u, ContentType: contentType, SizeBytes: int64(len(photo))}
}

func fakePhoto(t *testing.T, contentType, seed string) []byte {
	t.Helper()
	b, err := devstack.FakeMealPhoto(contentType, seed)
	if err != nil {
		t.Fatalf("FakeMealPhoto: %v", err)
	}
	return b
}

func detect(t *testing.T, s *devstack.MealDetector, key string, req md.DetectRequest) (*md.Detection, simAnswer) {
	t.Helper()
	a := callSim(t, http.MethodPost, s.URL()+"/v1/detections", s.APIKey(), key, req)
	if a.status != http.StatusOK {
		return nil, a
	}
	var d md.Detection
	if err := json.Unmarshal(a.body, &d); err != nil {
		t.Fatalf("decode detection: %v: %s", err, a.body)
	}
	return &d, a
}

// TestMealDetector checks that the detector reads the photo through a
// presigned URL and that the plate depends on the photo's bytes alone.
func TestMealDetector(t *testing.T) {
	s := startMealDetector(t)
	store := startPhotoStore(t)

	t.Run("DependsOnImageBytes", func(t *testing.T) {
		lunch := fakePhoto(t, md.ContentTypeJPEG, "lunch")
		first, a := detect(t, s, "d1", store.upload(t, "users/u1/meals/a.jpg", md.ContentTypeJPEG, lunch))
		if first == nil {
			t.Fatalf("%d %s", a.status, a.body)
		}
		if err := md.ValidateDetection(first); err != nil {
			t.Fatal(err)
		}
		if len(first.Items) == 0 || first.Model == "" {
			t.Fatalf("detection = %+v, want foods", first)
		}
		// The same bytes under another key and object: the same plate.
		again, _ := detect(t, s, "d2", store.upload(t, "users/u1/meals/b.jpg", md.ContentTypeJPEG, lunch))
		if !reflect.DeepEqual(first, again) {
			t.Fatalf("the same photo gave %+v, then %+v", first, again)
		}

		plates := map[string]bool{}
		for i := range 40 {
			ct := md.ContentTypes[i%len(md.ContentTypes)]
			photo := fakePhoto(t, ct, fmt.Sprint("plate-", i))
			d, a := detect(t, s, fmt.Sprint("many-", i), store.upload(t, fmt.Sprintf("users/u1/meals/%d", i), ct, photo))
			if d == nil {
				t.Fatalf("photo %d (%s): %d %s", i, ct, a.status, a.body)
			}
			if err := md.ValidateDetection(d); err != nil {
				t.Fatalf("photo %d: %v", i, err)
			}
			names := make([]string, len(d.Items))
			for j, it := range d.Items {
				names[j] = it.Name
			}
			plates[strings.Join(names, "+")] = true
		}
		if len(plates) < 30 {
			t.Fatalf("40 different photos showed only %d different plates", len(plates))
		}
	})

	t.Run("RefusedImages", func(t *testing.T) {
		big := bytes.Repeat([]byte{0xFF, 0xD8, 0xFF, 0xE0}, md.MaxImageBytes/4+1)
		web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			switch r.URL.Path {
			case "/big.jpg":
				_, _ = w.Write(big)
			case "/text.jpg":
				_, _ = w.Write([]byte("not an image at all"))
			default:
				http.NotFound(w, r)
			}
		}))
		t.Cleanup(web.Close)
		png := fakePhoto(t, md.ContentTypePNG, "p")
		wrongType := store.upload(t, "users/u1/meals/png", md.ContentTypePNG, png)
		wrongType.ContentType = md.ContentTypeJPEG

		for name, c := range map[string]struct {
			req    md.DetectRequest
			status int
			code   string
		}{
			"Missing":        {md.DetectRequest{ImageURL: web.URL + "/gone.jpg", ContentType: md.ContentTypeJPEG, SizeBytes: 10}, 422, "image_unreadable"},
			"NotAnImage":     {md.DetectRequest{ImageURL: web.URL + "/text.jpg", ContentType: md.ContentTypeJPEG, SizeBytes: 19}, 422, "image_unreadable"},
			"OtherType":      {wrongType, 422, "image_unreadable"},
			"TooLargeServed": {md.DetectRequest{ImageURL: web.URL + "/big.jpg", ContentType: md.ContentTypeJPEG, SizeBytes: 1000}, 422, "image_too_large"},
			"TooLargeSaid":   {md.DetectRequest{ImageURL: web.URL + "/big.jpg", ContentType: md.ContentTypeJPEG, SizeBytes: md.MaxImageBytes + 1}, 422, "image_too_large"},
			"GIF":            {md.DetectRequest{ImageURL: web.URL + "/a.gif", ContentType: "image/gif", SizeBytes: 10}, 422, "unsupported_media_type"},
			"NoURL":          {md.DetectRequest{ImageURL: "photo.jpg", ContentType: md.ContentTypeJPEG, SizeBytes: 10}, 400, "invalid_request"},
		} {
			_, a := detect(t, s, "refused-"+name, c.req)
			if a.status != c.status || a.errorCode() != c.code {
				t.Errorf("%s: %d %s, want %d %s", name, a.status, a.body, c.status, c.code)
			}
		}
	})

	t.Run("Absurd", func(t *testing.T) {
		s := startMealDetector(t)
		s.SetKnobs(devstack.SimKnobs{Absurd: true})
		d, a := detect(t, s, "absurd", store.upload(t, "users/u1/meals/absurd", md.ContentTypePNG, fakePhoto(t, md.ContentTypePNG, "x")))
		if d == nil {
			t.Fatalf("%d %s", a.status, a.body)
		}
		var fe *md.FieldError
		if err := md.ValidateDetection(d); !errors.Is(err, md.ErrInvalidResponse) || !errors.As(err, &fe) || fe.Field != "items[0].grams" || fe.Value != 48000.0 {
			t.Fatalf("ValidateDetection of an absurd detection = %v, want ErrInvalidResponse naming items[0].grams = 48000", err)
		}
	})
}
