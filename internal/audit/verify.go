package audit

import (
	"bytes"
	"context"
	"encoding/hex"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/nxg-fitness/nxg/gen/dbsqlc"
)

var errNoRows = pgx.ErrNoRows

// Problem is one break in the trail.
type Problem struct {
	Seq    int64
	Reason string
}

// Report is the outcome of Verify.
type Report struct {
	// Rows is how many rows were checked.
	Rows int64
	// Head is the hash of the last row, hex; record it elsewhere to detect
	// rows later removed from the end.
	Head string
	// Problems lists breaks found, at most MaxProblems.
	Problems []Problem
}

// OK reports whether the trail verified.
func (r Report) OK() bool { return len(r.Problems) == 0 }

// MaxProblems bounds a report: past it, the trail is broken badly enough.
const MaxProblems = 100

// Verify walks the whole trail in order and checks every link, every
// row's HMAC, and that every personal value still present matches the
// pseudonym the chain covers.
func (l *Log) Verify(ctx context.Context, db dbsqlc.DBTX) (Report, error) {
	var rep Report
	prev := genesis[:]
	var after int64
	for {
		rows, err := l.queries.AuditChainPage(ctx, db, dbsqlc.AuditChainPageParams{AfterSeq: after, RowLimit: 1000})
		if err != nil {
			return rep, fmt.Errorf("audit: read chain: %w", err)
		}
		for _, r := range rows {
			rep.Rows++
			problem := func(format string, args ...any) {
				if len(rep.Problems) < MaxProblems {
					rep.Problems = append(rep.Problems, Problem{Seq: r.Seq, Reason: fmt.Sprintf(format, args...)})
				}
			}
			if !bytes.Equal(r.PrevHash, prev) {
				problem("does not link to the row before it (a row was removed, inserted or reordered)")
			}
			want := l.hash(r.PrevHash, chainFields{
				occurredAt: r.OccurredAt, actorRef: r.ActorRef, action: r.Action,
				targetType: r.TargetType, targetRef: r.TargetRef, result: r.Result,
				ipRef: r.IpRef, uaRef: r.UaRef, requestID: r.RequestID, details: r.Details,
			})
			if !bytes.Equal(r.Hash, want) {
				problem("content does not match its hash (the row was edited)")
			}
			if r.ActorID.Valid && l.Pseudonym(r.ActorID.UUID.String()) != r.ActorRef {
				problem("actor_id does not match the recorded pseudonym")
			}
			if r.TargetID.Valid && l.Pseudonym(r.TargetID.String) != r.TargetRef {
				problem("target_id does not match the recorded pseudonym")
			}
			if r.Ip.Valid && l.Pseudonym(r.Ip.String) != r.IpRef {
				problem("ip does not match the recorded pseudonym")
			}
			if r.UserAgent.Valid && l.Pseudonym(r.UserAgent.String) != r.UaRef {
				problem("user_agent does not match the recorded pseudonym")
			}
			prev = r.Hash
			after = r.Seq
		}
		if len(rows) < 1000 {
			break
		}
	}
	if rep.Rows > 0 {
		rep.Head = hex.EncodeToString(prev)
	}
	return rep, nil
}
