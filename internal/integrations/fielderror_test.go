package integrations_test

import (
	"errors"
	"testing"

	"github.com/nxg-fitness/nxg/internal/integrations"
)

func TestFieldError(t *testing.T) {
	err := integrations.BadResponse("workoutplanner", "days[0].exercises[1].sets[2].reps", 400, "0..100")
	if got := err.Error(); got != "workoutplanner: invalid response: days[0].exercises[1].sets[2].reps = 400: want 0..100" {
		t.Fatalf("Error() = %q", got)
	}
	var fe *integrations.FieldError
	if !errors.As(err, &fe) || fe.Service != "workoutplanner" || fe.Field != "days[0].exercises[1].sets[2].reps" {
		t.Fatalf("errors.As = %+v", fe)
	}
	if !errors.Is(err, integrations.ErrInvalidResponse) || errors.Is(err, integrations.ErrInvalidRequest) {
		t.Fatal("a bad response must wrap ErrInvalidResponse only")
	}
	req := integrations.BadRequest("mealdetector", "content_type", "image/gif", "image/jpeg, image/png or image/heic")
	if !errors.Is(req, integrations.ErrInvalidRequest) {
		t.Fatal("a bad request must wrap ErrInvalidRequest")
	}
	// Strings are quoted, so an empty or spaced value is visible.
	if got := req.(*integrations.FieldError).Detail(); got != `content_type = "image/gif": want image/jpeg, image/png or image/heic` {
		t.Fatalf("Detail() = %q", got)
	}
}
