package devstack

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"io"
	"log/slog"
	"math"
	"net/http"
	"slices"
	"time"

	md "github.com/nxg-fitness/nxg/internal/integrations/mealdetector"
)

// MealDetector simulates the outside meal photo detection service
// (POST /v1/detections, docs/integrations.md). It downloads the photo from
// the request's image_url as the real service does and derives the plate
// from the SHA-256 of the bytes: the same photo always shows the same foods,
// different photos show different ones.
type MealDetector struct {
	*simulator
	http *http.Client
}

// simDetectorModel is the model name the simulator reports.
const simDetectorModel = "sim-detector-1"

// detectorDownloadTimeout bounds the image download, as the real service's
// fetcher would.
const detectorDownloadTimeout = 10 * time.Second

// StartMealDetector starts the simulator on a free loopback port.
func StartMealDetector(logger *slog.Logger) (*MealDetector, error) {
	m := &MealDetector{http: &http.Client{Timeout: detectorDownloadTimeout}}
	sim, err := startSimulator(md.Name, logger, map[string]simHandler{
		"POST /v1/detections": m.handleDetect,
	})
	if err != nil {
		return nil, err
	}
	m.simulator = sim
	return m, nil
}

func (m *MealDetector) handleDetect(ctx context.Context, body []byte, absurd bool) (any, *apiError) {
	var req md.DetectRequest
	if e := decodeStrict(body, &req); e != nil {
		return nil, e
	}
	if err := req.Validate(); err != nil {
		// The media checks have their own codes in the contract.
		switch {
		case !slices.Contains(md.ContentTypes, req.ContentType):
			return nil, &apiError{Status: http.StatusUnprocessableEntity, Code: "unsupported_media_type", Message: fieldErrorDetail(err)}
		case req.SizeBytes > md.MaxImageBytes:
			return nil, &apiError{Status: http.StatusUnprocessableEntity, Code: "image_too_large", Message: fieldErrorDetail(err)}
		}
		return nil, invalidRequest("%s", fieldErrorDetail(err))
	}
	img, apiErr := m.download(ctx, req)
	if apiErr != nil {
		return nil, apiErr
	}
	det := detectPlate(img)
	if absurd {
		for i := range det.Items {
			det.Items[i].Grams = 48000
			det.Items[i].Kcal = -350
			det.Items[i].Confidence = 7
		}
	}
	return det, nil
}

// download fetches the photo, refusing what the real service refuses: an
// answer other than 200, more than MaxImageBytes, or bytes that are not an
// image of the declared type.
func (m *MealDetector) download(ctx context.Context, req md.DetectRequest) ([]byte, *apiError) {
	unreadable := func(format string, args ...any) *apiError {
		return &apiError{Status: http.StatusUnprocessableEntity, Code: "image_unreadable", Message: fmt.Sprintf(format, args...)}
	}
	hreq, err := http.NewRequestWithContext(ctx, http.MethodGet, req.ImageURL, nil)
	if err != nil {
		return nil, unreadable("image_url: %v", err)
	}
	resp, err := m.http.Do(hreq)
	if err != nil {
		return nil, unreadable("image_url: download failed: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, unreadable("image_url: download answered HTTP %d", resp.StatusCode)
	}
	img, err := io.ReadAll(io.LimitReader(resp.Body, md.MaxImageBytes+1))
	if err != nil {
		return nil, unreadable("image_url: download failed: %v", err)
	}
	if len(img) > md.MaxImageBytes {
		return nil, &apiError{Status: http.StatusUnprocessableEntity, Code: "image_too_large",
			Message: fmt.Sprintf("the image is larger than %d bytes", md.MaxImageBytes)}
	}
	if !looksLike(req.ContentType, img) {
		return nil, unreadable("the downloaded bytes are not a %s image", req.ContentType)
	}
	return img, nil
}

// looksLike checks the file signature of an image type.
func looksLike(contentType string, b []byte) bool {
	switch contentType {
	case md.ContentTypeJPEG:
		return bytes.HasPrefix(b, []byte{0xFF, 0xD8, 0xFF})
	case md.ContentTypePNG:
		return bytes.HasPrefix(b, []byte("\x89PNG\r\n\x1a\n"))
	case md.ContentTypeHEIC:
		if len(b) < 12 || string(b[4:8]) != "ftyp" {
			return false
		}
		return slices.Contains([]string{"heic", "heix", "hevc", "hevx", "mif1", "msf1"}, string(b[8:12]))
	}
	return false
}

// detectPlate derives the foods on a plate from the photo's SHA-256: one to
// four visible foods, each a realistic portion, with a confidence.
func detectPlate(img []byte) *md.Detection {
	sum := sha256.Sum256(img)
	rng := seedFrom(img)
	var visible []food
	for _, f := range foods {
		if f.visible {
			visible = append(visible, f)
		}
	}
	det := &md.Detection{
		DetectionID: "md_" + hex.EncodeToString(sum[:12]),
		Model:       simDetectorModel,
		Items:       []md.Item{},
	}
	n := 1 + rng.IntN(4)
	for _, i := range rng.Perm(len(visible))[:n] {
		f := visible[i]
		grams := f.portion * (0.6 + 0.8*rng.Float64())
		det.Items = append(det.Items, md.Item{
			Name:       f.name,
			Nutrients:  f.portionOf(grams),
			Confidence: math.Round((0.55+0.44*rng.Float64())*100) / 100,
		})
	}
	return det
}

// FakeMealPhoto returns a small image of contentType whose bytes depend on
// seed, for tests and demo data that upload a meal photo: JPEG and PNG are
// real images, HEIC is only its file signature followed by bytes. The same
// seed gives the same bytes, so the same detection.
func FakeMealPhoto(contentType, seed string) ([]byte, error) {
	rng := seedFrom([]byte(contentType + "\x00" + seed))
	if contentType == md.ContentTypeHEIC {
		b := append([]byte("\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic"), make([]byte, 512)...)
		for i := 24; i < len(b); i++ {
			b[i] = byte(rng.Uint32())
		}
		return b, nil
	}
	pic := image.NewRGBA(image.Rect(0, 0, 16, 16))
	for y := range 16 {
		for x := range 16 {
			v := rng.Uint32()
			pic.Set(x, y, color.RGBA{R: byte(v), G: byte(v >> 8), B: byte(v >> 16), A: 255})
		}
	}
	var buf bytes.Buffer
	var err error
	switch contentType {
	case md.ContentTypeJPEG:
		err = jpeg.Encode(&buf, pic, &jpeg.Options{Quality: 90})
	case md.ContentTypePNG:
		err = png.Encode(&buf, pic)
	default:
		return nil, fmt.Errorf("devstack: FakeMealPhoto: unsupported content type %q", contentType)
	}
	if err != nil {
		return nil, fmt.Errorf("devstack: FakeMealPhoto: encode: %w", err)
	}
	return buf.Bytes(), nil
}
