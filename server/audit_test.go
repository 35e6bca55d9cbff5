package server

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/nxg-fitness/nxg/db"
	nxgv1 "github.com/nxg-fitness/nxg/gen/nxg/v1"
	"github.com/nxg-fitness/nxg/gen/nxg/v1/nxgv1connect"
	"github.com/nxg-fitness/nxg/internal/audit"
	"github.com/nxg-fitness/nxg/internal/auth/token"
	"github.com/nxg-fitness/nxg/internal/pagination"
)

// auditTestCaller is a signed-in user of an audit test: their id and an
// access token of a live session.
type auditTestCaller struct {
	ID    uuid.UUID
	Token string
}

// auditTestUser creates a user of role directly in the database (with a
// wrapped data key, as every account has) and signs them in: a live
// session and an access token for it.
func auditTestUser(t testing.TB, b *apiTestBundle, role token.Role) auditTestCaller {
	t.Helper()
	ctx := context.Background()
	id, err := uuid.NewV7()
	if err != nil {
		t.Fatal(err)
	}
	_, wrapped, err := b.identity.MasterKeys.NewDataKey(id.String())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.db.Pool.Exec(ctx,
		`INSERT INTO users (id, email, password_hash, display_name, role, data_key) VALUES ($1, $2, $3, $4, $5, $6)`,
		id, string(role)+"-"+id.String()+"@audit.test", "$argon2id$not-a-real-hash", "Audit "+string(role), string(role), wrapped,
	); err != nil {
		t.Fatal(err)
	}
	sess, _, err := b.identity.Sessions.Create(ctx, id.String(), string(role), "audit test", "192.0.2.10", "audit-test/1.0")
	if err != nil {
		t.Fatal(err)
	}
	tok, _, err := b.identity.Tokens.Issue(id.String(), sess.ID, role)
	if err != nil {
		t.Fatal(err)
	}
	return auditTestCaller{ID: id, Token: tok}
}

// auditTestRecord appends events to the trail, each in its own transaction.
func auditTestRecord(t testing.TB, b *apiTestBundle, events ...audit.Event) {
	t.Helper()
	ctx := context.Background()
	for _, e := range events {
		if err := db.WithTx(ctx, b.db.Pool, func(tx pgx.Tx) error {
			return b.identity.Audit.Record(ctx, tx, e)
		}); err != nil {
			t.Fatal(err)
		}
	}
}

// auditTestList calls ListAuditEvents as caller over Connect JSON.
func auditTestList(b *apiTestBundle, caller auditTestCaller, msg *nxgv1.ListAuditEventsRequest) (*nxgv1.ListAuditEventsResponse, error) {
	client := nxgv1connect.NewAuditServiceClient(http.DefaultClient, b.server.URL, connect.WithProtoJSON())
	req := connect.NewRequest(msg)
	if caller.Token != "" {
		req.Header().Set("Authorization", "Bearer "+caller.Token)
	}
	res, err := client.ListAuditEvents(context.Background(), req)
	if err != nil {
		return nil, err
	}
	return res.Msg, nil
}

// auditTestListAll follows next_page_token to the end.
func auditTestListAll(t testing.TB, b *apiTestBundle, caller auditTestCaller, msg *nxgv1.ListAuditEventsRequest) []*nxgv1.AuditEvent {
	t.Helper()
	var all []*nxgv1.AuditEvent
	for range 100 {
		res, err := auditTestList(b, caller, msg)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, res.GetEvents()...)
		if res.GetNextPageToken() == "" {
			return all
		}
		msg.PageToken = res.GetNextPageToken()
	}
	t.Fatal("more than 100 pages")
	return nil
}

func auditTestCode(t testing.TB, err error, want connect.Code, mention string) {
	t.Helper()
	if connect.CodeOf(err) != want {
		t.Fatalf("error = %v, want %v", err, want)
	}
	if !strings.Contains(err.Error(), mention) {
		t.Fatalf("error %q does not mention %q", err, mention)
	}
}

func TestAuditService(t *testing.T) {
	t.Parallel()
	base := time.Date(2024, 3, 1, 9, 0, 0, 0, time.UTC)

	t.Run("MemberIsDeniedAndTheAttemptRecorded", func(t *testing.T) {
		t.Parallel()
		b := setupAPI(t)
		member := auditTestUser(t, b, token.RoleMember)
		staff := auditTestUser(t, b, token.RoleStaff)
		admin := auditTestUser(t, b, token.RoleAdmin)
		for _, c := range []auditTestCaller{member, staff} {
			_, err := auditTestList(b, c, &nxgv1.ListAuditEventsRequest{})
			auditTestCode(t, err, connect.CodePermissionDenied, "admin")
		}
		denied := auditTestListAll(t, b, admin, &nxgv1.ListAuditEventsRequest{Action: "audit.read"})
		var actors []string
		for _, e := range denied {
			if e.GetResult() == string(audit.ResultDenied) {
				actors = append(actors, e.GetActorId())
			}
		}
		if !slices.Contains(actors, member.ID.String()) || !slices.Contains(actors, staff.ID.String()) || len(actors) != 2 {
			t.Fatalf("denied audit.read rows by %v, want the member and the staff member", actors)
		}
	})

	t.Run("WithoutTokenIsUnauthenticated", func(t *testing.T) {
		t.Parallel()
		b := setupAPI(t)
		_, err := auditTestList(b, auditTestCaller{}, &nxgv1.ListAuditEventsRequest{})
		if connect.CodeOf(err) != connect.CodeUnauthenticated {
			t.Fatalf("error = %v, want unauthenticated", err)
		}
	})

	t.Run("Filters", func(t *testing.T) {
		t.Parallel()
		b := setupAPI(t)
		admin := auditTestUser(t, b, token.RoleAdmin)
		alice, bob := uuid.New(), uuid.New()
		auditTestRecord(t, b,
			audit.Event{ActorID: alice, Action: "auth.login", TargetType: "user", TargetID: alice.String(), Result: audit.ResultSuccess,
				IP: "203.0.113.1", UserAgent: "NXG/1.0 (iOS)", RequestID: "req-a1", Details: map[string]string{"device": "iPhone"}, OccurredAt: base},
			audit.Event{ActorID: bob, Action: "auth.login", TargetType: "user", TargetID: bob.String(), Result: audit.ResultFailure, OccurredAt: base.Add(time.Hour)},
			audit.Event{ActorID: alice, Action: "profile.update", TargetType: "user", TargetID: alice.String(), Result: audit.ResultSuccess, OccurredAt: base.Add(2 * time.Hour)},
			audit.Event{ActorID: bob, Action: "staff.read_member", TargetType: "user", TargetID: alice.String(), Result: audit.ResultSuccess, OccurredAt: base.Add(3 * time.Hour)},
			audit.Event{Action: "admin.user_created", TargetType: "user", TargetID: bob.String(), Result: audit.ResultSuccess, OccurredAt: base.Add(4 * time.Hour)},
		)
		actions := func(events []*nxgv1.AuditEvent) []string {
			out := make([]string, len(events))
			for i, e := range events {
				out[i] = e.GetAction() + "/" + e.GetResult()
			}
			return out
		}
		cases := []struct {
			name string
			req  *nxgv1.ListAuditEventsRequest
			want []string
		}{
			{"ActorID", &nxgv1.ListAuditEventsRequest{ActorId: alice.String()},
				[]string{"profile.update/success", "auth.login/success"}},
			{"TargetID", &nxgv1.ListAuditEventsRequest{TargetId: alice.String()},
				[]string{"staff.read_member/success", "profile.update/success", "auth.login/success"}},
			{"Action", &nxgv1.ListAuditEventsRequest{Action: "auth.login"},
				[]string{"auth.login/failure", "auth.login/success"}},
			{"SinceUntil", &nxgv1.ListAuditEventsRequest{Since: timestamppb.New(base.Add(time.Hour)), Until: timestamppb.New(base.Add(3 * time.Hour))},
				[]string{"profile.update/success", "auth.login/failure"}},
			{"Since", &nxgv1.ListAuditEventsRequest{Since: timestamppb.New(base.Add(3 * time.Hour)), Until: timestamppb.New(base.Add(24 * time.Hour))},
				[]string{"admin.user_created/success", "staff.read_member/success"}},
			{"Combined", &nxgv1.ListAuditEventsRequest{ActorId: bob.String(), TargetId: alice.String(), Action: "staff.read_member"},
				[]string{"staff.read_member/success"}},
			{"NoMatch", &nxgv1.ListAuditEventsRequest{ActorId: alice.String(), Action: "staff.read_member"}, []string{}},
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				got := actions(auditTestListAll(t, b, admin, c.req))
				if !slices.Equal(got, c.want) {
					t.Fatalf("events = %v, want %v", got, c.want)
				}
			})
		}

		t.Run("EventFields", func(t *testing.T) {
			got := auditTestListAll(t, b, admin, &nxgv1.ListAuditEventsRequest{ActorId: alice.String(), Action: "auth.login"})
			if len(got) != 1 {
				t.Fatalf("%d events, want 1", len(got))
			}
			e := got[0]
			if e.GetSeq() <= 0 || !e.GetOccurredAt().AsTime().Equal(base) || e.GetActorId() != alice.String() ||
				e.GetActorRef() != b.identity.Audit.Pseudonym(alice.String()) || e.GetTargetType() != "user" ||
				e.GetTargetId() != alice.String() || e.GetTargetRef() == "" || e.GetIp() != "203.0.113.1" ||
				e.GetUserAgent() != "NXG/1.0 (iOS)" || e.GetRequestId() != "req-a1" || e.GetDetails()["device"] != "iPhone" {
				t.Fatalf("event = %v", e)
			}
		})

		t.Run("SystemActorIsEmpty", func(t *testing.T) {
			got := auditTestListAll(t, b, admin, &nxgv1.ListAuditEventsRequest{Action: "admin.user_created"})
			if len(got) != 1 || got[0].GetActorId() != "" || len(got[0].GetDetails()) != 0 {
				t.Fatalf("events = %v", got)
			}
		})
	})

	t.Run("InvalidRequests", func(t *testing.T) {
		t.Parallel()
		b := setupAPI(t)
		admin := auditTestUser(t, b, token.RoleAdmin)
		cases := []struct {
			name    string
			req     *nxgv1.ListAuditEventsRequest
			mention string
		}{
			{"SinceAfterUntil", &nxgv1.ListAuditEventsRequest{Since: timestamppb.New(base.Add(time.Hour)), Until: timestamppb.New(base)}, "until"},
			{"SinceEqualsUntil", &nxgv1.ListAuditEventsRequest{Since: timestamppb.New(base), Until: timestamppb.New(base)}, "until"},
			{"GarbageToken", &nxgv1.ListAuditEventsRequest{PageToken: "not a token!"}, "page_token"},
			{"TokenOfAnotherList", &nxgv1.ListAuditEventsRequest{PageToken: pagination.Encode("branches", map[string]string{"n": "x"})}, "page_token"},
			{"ActorNotUUID", &nxgv1.ListAuditEventsRequest{ActorId: "alice"}, "actor_id"},
			{"PageSizeTooBig", &nxgv1.ListAuditEventsRequest{PageSize: 201}, "page_size"},
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				_, err := auditTestList(b, admin, c.req)
				auditTestCode(t, err, connect.CodeInvalidArgument, c.mention)
			})
		}
	})

	t.Run("PaginationIsCompleteAndOrdered", func(t *testing.T) {
		t.Parallel()
		b := setupAPI(t)
		admin := auditTestUser(t, b, token.RoleAdmin)
		const n = 7
		for i := range n {
			auditTestRecord(t, b, audit.Event{ActorID: uuid.New(), Action: "test.page", TargetType: "user",
				Result: audit.ResultSuccess, OccurredAt: base.Add(time.Duration(i) * time.Minute)})
		}
		// Rows that arrive between pages are newer than the cursor, so
		// they must not shift or repeat anything.
		req := &nxgv1.ListAuditEventsRequest{Action: "test.page", PageSize: 3}
		var pages [][]int64
		for {
			res, err := auditTestList(b, admin, req)
			if err != nil {
				t.Fatal(err)
			}
			var seqs []int64
			for _, e := range res.GetEvents() {
				seqs = append(seqs, e.GetSeq())
			}
			pages = append(pages, seqs)
			auditTestRecord(t, b, audit.Event{Action: "test.page", TargetType: "user", Result: audit.ResultSuccess})
			if res.GetNextPageToken() == "" {
				break
			}
			req.PageToken = res.GetNextPageToken()
		}
		if len(pages) != 3 || len(pages[0]) != 3 || len(pages[1]) != 3 || len(pages[2]) != 1 {
			t.Fatalf("pages = %v, want 3 + 3 + 1 events", pages)
		}
		all := slices.Concat(pages...)
		if !slices.IsSortedFunc(all, func(a, b int64) int { return int(b - a) }) {
			t.Fatalf("seqs %v are not newest first", all)
		}
		var want []int64
		if err := b.db.Pool.QueryRow(context.Background(),
			`SELECT array_agg(seq ORDER BY seq DESC) FROM audit_events WHERE action = 'test.page' AND occurred_at < '2025-01-01'`).Scan(&want); err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(all, want) {
			t.Fatalf("paged seqs %v, want %v", all, want)
		}

		t.Run("DefaultPageSizeIs50", func(t *testing.T) {
			for range 52 {
				auditTestRecord(t, b, audit.Event{Action: "test.many", TargetType: "user", Result: audit.ResultSuccess})
			}
			res, err := auditTestList(b, admin, &nxgv1.ListAuditEventsRequest{Action: "test.many"})
			if err != nil {
				t.Fatal(err)
			}
			if len(res.GetEvents()) != pagination.DefaultSize || res.GetNextPageToken() == "" {
				t.Fatalf("%d events, next %q; want 50 and a token", len(res.GetEvents()), res.GetNextPageToken())
			}
		})
	})

	t.Run("ReadingIsAudited", func(t *testing.T) {
		t.Parallel()
		b := setupAPI(t)
		admin := auditTestUser(t, b, token.RoleAdmin)
		target := uuid.New()
		since := base
		until := base.Add(time.Hour)
		if _, err := auditTestList(b, admin, &nxgv1.ListAuditEventsRequest{
			TargetId: target.String(), Action: "auth.login", Since: timestamppb.New(since), Until: timestamppb.New(until), PageSize: 10,
		}); err != nil {
			t.Fatal(err)
		}
		// The second call sees the first one's row.
		reads := auditTestListAll(t, b, admin, &nxgv1.ListAuditEventsRequest{Action: "audit.read"})
		if len(reads) != 1 {
			t.Fatalf("%d audit.read events, want 1: %v", len(reads), reads)
		}
		r := reads[0]
		want := map[string]string{
			"target_id": target.String(), "action": "auth.login",
			"since": since.Format(time.RFC3339Nano), "until": until.Format(time.RFC3339Nano),
			"page_size": "10", "returned": "0",
		}
		for k, v := range want {
			if r.GetDetails()[k] != v {
				t.Errorf("details[%q] = %q, want %q (details %v)", k, r.GetDetails()[k], v, r.GetDetails())
			}
		}
		if r.GetActorId() != admin.ID.String() || r.GetResult() != "success" || r.GetTargetType() != "audit_trail" ||
			r.GetIp() == "" || r.GetRequestId() == "" {
			t.Fatalf("audit.read event = %v", r)
		}
		rep, err := b.identity.Audit.Verify(context.Background(), b.db.Pool)
		if err != nil || !rep.OK() || rep.Rows != 2 {
			t.Fatalf("trail after two reads: %+v, %v", rep, err)
		}
	})

	t.Run("FailedAuditWriteReturnsNoRows", func(t *testing.T) {
		t.Parallel()
		b := setupAPI(t)
		admin := auditTestUser(t, b, token.RoleAdmin)
		auditTestRecord(t, b, audit.Event{Action: "auth.login", TargetType: "user", Result: audit.ResultSuccess})
		// An admin whose read cannot be recorded must not read: make
		// every insert into the trail fail.
		if _, err := b.db.Pool.Exec(context.Background(),
			`ALTER TABLE audit_events ADD CONSTRAINT no_reads CHECK (action <> 'audit.read')`); err != nil {
			t.Fatal(err)
		}
		res, err := auditTestList(b, admin, &nxgv1.ListAuditEventsRequest{})
		if connect.CodeOf(err) != connect.CodeInternal || res != nil {
			t.Fatalf("list = %v, %v; want internal and no rows", res, err)
		}
		var ce *connect.Error
		if errors.As(err, &ce) && strings.Contains(ce.Message(), "no_reads") {
			t.Fatalf("internal cause leaked to the client: %v", ce)
		}
	})
}
