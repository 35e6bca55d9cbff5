// Package audit writes and verifies NXG's tamper-evident audit trail.
//
// Every security-relevant action (sign-ins, session revocations, profile
// changes, exports, erasures, staff reads of members' data) is recorded in
// the same transaction as the action itself, so an action and its audit row
// commit or roll back together.
//
// Rows form a hash chain: each row stores the previous row's hash and an
// HMAC-SHA256, under a key the database never sees, of its own content
// together with that previous hash. Editing, deleting or reordering rows,
// even by someone with full write access to the database, breaks the chain
// and is reported by Verify (`nxg audit verify`). Only removing rows from the
// very end cannot be seen from the chain alone; operators anchor the head
// hash elsewhere (the verify command prints it) to cover that.
//
// Personal values (who acted, on whom, from which IP and user agent) are
// erasable for GDPR: the chain covers keyed pseudonyms of them, stored
// beside them, so erasing the values keeps every row verifiable.
package audit

import (
	"context"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/nxg-fitness/nxg/gen/dbsqlc"
)

// Result is how the audited action ended.
type Result string

// Results an audit row may record.
const (
	ResultSuccess Result = "success"
	ResultFailure Result = "failure"
	ResultDenied  Result = "denied"
)

// Event is one audited action.
type Event struct {
	// ActorID is the user who acted; uuid.Nil for an anonymous caller or
	// the system itself.
	ActorID uuid.UUID
	// Action names what happened, e.g. "auth.login".
	Action string
	// TargetType and TargetID name what it happened to, e.g. "user" and an id.
	TargetType, TargetID string
	Result               Result
	// IP, UserAgent and RequestID describe the request that caused it.
	IP, UserAgent, RequestID string
	// Details add context; never put secrets, tokens or personal data here.
	Details map[string]string
	// OccurredAt defaults to now.
	OccurredAt time.Time
}

// KeySize is the length of the audit key.
const KeySize = 32

// Log records and verifies audit events.
type Log struct {
	chainKey, pseudonymKey []byte
	queries                *dbsqlc.Queries
}

// New returns a Log using key (32 random bytes from configuration). Two
// independent keys are derived from it: one for the chain's HMACs and one
// for pseudonyms, so neither use can weaken the other.
func New(key []byte) (*Log, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("audit key must be %d bytes, got %d", KeySize, len(key))
	}
	chainKey, err := hkdf.Key(sha256.New, key, nil, "nxg-audit/v1/chain", 32)
	if err != nil {
		return nil, err
	}
	pseudonymKey, err := hkdf.Key(sha256.New, key, nil, "nxg-audit/v1/pseudonym", 32)
	if err != nil {
		return nil, err
	}
	return &Log{chainKey: chainKey, pseudonymKey: pseudonymKey, queries: dbsqlc.New()}, nil
}

// Pseudonym is the stable keyed stand-in for a personal value: the same
// value always gives the same pseudonym, so an erased person's rows can
// still be grouped, but the value cannot be recovered from it. The empty
// value has the empty pseudonym.
func (l *Log) Pseudonym(value string) string {
	if value == "" {
		return ""
	}
	m := hmac.New(sha256.New, l.pseudonymKey)
	m.Write([]byte(value))
	return "p_" + hex.EncodeToString(m.Sum(nil)[:16])
}

// Record appends e to the trail inside tx. It takes the chain's lock, which
// is held until tx ends: call it as the last statement of the transaction so
// concurrent audited transactions wait on each other as briefly as possible.
func (l *Log) Record(ctx context.Context, tx dbsqlc.DBTX, e Event) error {
	if e.Action == "" || e.Result == "" {
		return errors.New("audit: event needs an action and a result")
	}
	if e.OccurredAt.IsZero() {
		e.OccurredAt = time.Now()
	}
	// PostgreSQL keeps microseconds; hash what will be read back.
	e.OccurredAt = e.OccurredAt.UTC().Truncate(time.Microsecond)
	details := "{}"
	if len(e.Details) > 0 {
		b, err := json.Marshal(e.Details) // map keys are sorted: canonical
		if err != nil {
			return fmt.Errorf("audit: encode details: %w", err)
		}
		details = string(b)
	}
	actor := ""
	if e.ActorID != uuid.Nil {
		actor = e.ActorID.String()
	}
	row := dbsqlc.AuditInsertParams{
		OccurredAt: e.OccurredAt,
		ActorID:    uuid.NullUUID{UUID: e.ActorID, Valid: e.ActorID != uuid.Nil},
		ActorRef:   l.Pseudonym(actor),
		Action:     e.Action,
		TargetType: e.TargetType,
		TargetID:   optionalText(e.TargetID),
		TargetRef:  l.Pseudonym(e.TargetID),
		Result:     string(e.Result),
		Ip:         optionalText(e.IP),
		IpRef:      l.Pseudonym(e.IP),
		UserAgent:  optionalText(truncate(e.UserAgent, 512)),
		UaRef:      l.Pseudonym(truncate(e.UserAgent, 512)),
		RequestID:  truncate(e.RequestID, 64),
		Details:    details,
	}

	if err := l.queries.AuditLock(ctx, tx); err != nil {
		return fmt.Errorf("audit: lock chain: %w", err)
	}
	prev, err := l.queries.AuditHead(ctx, tx)
	if errors.Is(err, errNoRows) || (err == nil && prev == nil) {
		prev, err = genesis[:], nil
	}
	if err != nil {
		return fmt.Errorf("audit: read chain head: %w", err)
	}
	row.PrevHash = prev
	row.Hash = l.hash(prev, chainFields{
		occurredAt: row.OccurredAt, actorRef: row.ActorRef, action: row.Action,
		targetType: row.TargetType, targetRef: row.TargetRef, result: row.Result,
		ipRef: row.IpRef, uaRef: row.UaRef, requestID: row.RequestID, details: row.Details,
	})
	if _, err := l.queries.AuditInsert(ctx, tx, row); err != nil {
		return fmt.Errorf("audit: insert: %w", err)
	}
	return nil
}

// genesis is the previous hash of the first row.
var genesis [32]byte

// chainFields are the columns the chain covers.
type chainFields struct {
	occurredAt                               time.Time
	actorRef, action, targetType, targetRef  string
	result, ipRef, uaRef, requestID, details string
}

// hash is HMAC-SHA256 over the previous hash and length-prefixed fields, so
// no two different rows can encode to the same bytes.
func (l *Log) hash(prev []byte, f chainFields) []byte {
	m := hmac.New(sha256.New, l.chainKey)
	m.Write(prev)
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], uint64(f.occurredAt.UnixMicro()))
	m.Write(n[:])
	for _, s := range []string{f.actorRef, f.action, f.targetType, f.targetRef, f.result, f.ipRef, f.uaRef, f.requestID, f.details} {
		binary.BigEndian.PutUint64(n[:], uint64(len(s)))
		m.Write(n[:])
		m.Write([]byte(s))
	}
	return m.Sum(nil)
}

// EraseSubject removes userID's identity from the trail (as actor and as
// target, with the IP and user agent of their own requests), leaving the
// pseudonyms. It returns how many rows changed.
func (l *Log) EraseSubject(ctx context.Context, tx dbsqlc.DBTX, userID uuid.UUID) (int64, error) {
	n, err := l.queries.AuditEraseSubject(ctx, tx, userID)
	if err != nil {
		return 0, fmt.Errorf("audit: erase subject: %w", err)
	}
	return n, nil
}

func optionalText(s string) pgtype.Text {
	return pgtype.Text{String: s, Valid: s != ""}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	// Cut on a rune boundary so the stored text stays valid UTF-8.
	for n > 0 && !utf8RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

func utf8RuneStart(b byte) bool { return b&0xC0 != 0x80 }
