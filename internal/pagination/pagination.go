// Package pagination implements the list conventions of the NXG API:
// page_size (0 means the default, capped at a maximum) and opaque page tokens
// that carry a keyset cursor, so pages stay stable while rows are added.
package pagination

import (
	"encoding/base64"
	"encoding/json"
	"time"

	"github.com/google/uuid"

	"github.com/nxg-fitness/nxg/internal/apperr"
)

const (
	// DefaultSize is the page size when a request asks for 0.
	DefaultSize = 50
	// MaxSize is the largest page a request may ask for.
	MaxSize = 200
)

// Size turns a requested page_size into the number of rows to return.
// Negative sizes are refused by request validation before they get here;
// they are treated as the default for safety.
func Size(requested int32) int32 {
	return SizeWithin(requested, DefaultSize, MaxSize)
}

// SizeWithin is Size for a list whose contract states its own default and
// maximum (a catalogue pages by hundreds, plans by tens).
func SizeWithin(requested, def, most int32) int32 {
	switch {
	case requested <= 0:
		return def
	case requested > most:
		return most
	default:
		return requested
	}
}

// Page cuts rows, read with a limit of size+1, to one page of at most
// size rows. When the extra row came back there is a next page, and Page
// returns its token for list, made by cursor from the last row kept;
// otherwise the token is "".
func Page[T any](list string, rows []T, size int32, cursor func(last T) any) ([]T, string) {
	if int32(len(rows)) <= size {
		return rows, ""
	}
	rows = rows[:size]
	return rows, Encode(list, cursor(rows[len(rows)-1]))
}

// TimeCursor is the keyset position after the last row of a page ordered
// by (time, id), the cursor of most lists: the row's time and id.
type TimeCursor struct {
	Time time.Time `json:"t"`
	ID   uuid.UUID `json:"i"`
}

// envelope ties a cursor to the list it came from, so a token from one list
// is refused by another instead of silently returning the wrong rows.
type envelope struct {
	List   string          `json:"l"`
	Cursor json.RawMessage `json:"c"`
}

// Encode makes a page token for list from cursor (any JSON-encodable value,
// typically the sort key of the last row returned).
func Encode(list string, cursor any) string {
	c, err := json.Marshal(cursor)
	if err != nil {
		// Cursors are our own small structs; failing to encode one is a
		// programming error, not a runtime condition.
		panic("pagination: encode cursor: " + err.Error())
	}
	b, _ := json.Marshal(envelope{List: list, Cursor: c})
	return base64.RawURLEncoding.EncodeToString(b)
}

// Decode reads a page token made by Encode for the same list into cursor.
// An empty token means the first page: Decode returns false and no error.
func Decode(list, token string, cursor any) (bool, error) {
	if token == "" {
		return false, nil
	}
	invalid := apperr.InvalidArgument("page_token", "is not a page token of this list; pass next_page_token from the previous response unchanged")
	b, err := base64.RawURLEncoding.DecodeString(token)
	if err != nil {
		return false, invalid
	}
	var env envelope
	if err := json.Unmarshal(b, &env); err != nil || env.List != list {
		return false, invalid
	}
	if err := json.Unmarshal(env.Cursor, cursor); err != nil {
		return false, invalid
	}
	return true, nil
}
