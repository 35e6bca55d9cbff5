package server

import (
	"context"
	"net/http"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/uuid"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/nxg-fitness/nxg/gen/dbsqlc"
	nxgv1 "github.com/nxg-fitness/nxg/gen/nxg/v1"
	"github.com/nxg-fitness/nxg/gen/nxg/v1/nxgv1connect"
	"github.com/nxg-fitness/nxg/internal/auth/token"
)

// membershipTestClient calls MembershipService as one caller.
type membershipTestClient struct {
	t      testing.TB
	client nxgv1connect.MembershipServiceClient
	caller auditTestCaller
}

func membershipClient(t testing.TB, b *apiTestBundle, caller auditTestCaller) *membershipTestClient {
	return &membershipTestClient{t: t, caller: caller,
		client: nxgv1connect.NewMembershipServiceClient(http.DefaultClient, b.server.URL, connect.WithProtoJSON())}
}

func membershipAuth[T any](c *membershipTestClient, msg *T) *connect.Request[T] {
	req := connect.NewRequest(msg)
	req.Header().Set("Authorization", "Bearer "+c.caller.Token)
	return req
}

func (c *membershipTestClient) grant(msg *nxgv1.GrantMembershipRequest) (*nxgv1.Membership, error) {
	res, err := c.client.GrantMembership(context.Background(), membershipAuth(c, msg))
	if err != nil {
		return nil, err
	}
	return res.Msg.GetMembership(), nil
}

func (c *membershipTestClient) mustGrant(msg *nxgv1.GrantMembershipRequest) *nxgv1.Membership {
	c.t.Helper()
	m, err := c.grant(msg)
	if err != nil {
		c.t.Fatal(err)
	}
	return m
}

func (c *membershipTestClient) list(msg *nxgv1.ListMembershipsRequest) (*nxgv1.ListMembershipsResponse, error) {
	res, err := c.client.ListMemberships(context.Background(), membershipAuth(c, msg))
	if err != nil {
		return nil, err
	}
	return res.Msg, nil
}

// listIDs follows next_page_token to the end and returns the ids in order.
func (c *membershipTestClient) listIDs(msg *nxgv1.ListMembershipsRequest) []string {
	c.t.Helper()
	var ids []string
	for range 100 {
		res, err := c.list(msg)
		if err != nil {
			c.t.Fatal(err)
		}
		for _, m := range res.GetMemberships() {
			ids = append(ids, m.GetId())
		}
		if res.GetNextPageToken() == "" {
			return ids
		}
		msg.PageToken = res.GetNextPageToken()
	}
	c.t.Fatal("more than 100 pages")
	return nil
}

func (c *membershipTestClient) end(id string) (*nxgv1.Membership, error) {
	res, err := c.client.EndMembership(context.Background(), membershipAuth(c, &nxgv1.EndMembershipRequest{MembershipId: id}))
	if err != nil {
		return nil, err
	}
	return res.Msg.GetMembership(), nil
}

func addStaffBranch(t testing.TB, b *apiTestBundle, staff uuid.UUID, branch string) {
	t.Helper()
	if _, err := b.db.Pool.Exec(context.Background(), `INSERT INTO staff_branches (user_id, branch_id) VALUES ($1, $2)`, staff, branch); err != nil {
		t.Fatal(err)
	}
}

// membershipAuditRows returns "action actor target" of the membership audit rows, oldest first.
func membershipAuditRows(t testing.TB, b *apiTestBundle) []string {
	t.Helper()
	rows, err := b.db.Pool.Query(context.Background(),
		`SELECT action || ' ' || coalesce(actor_id::text, '') || ' ' || coalesce(target_id, '') FROM audit_events WHERE action LIKE 'membership.%' ORDER BY seq`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		out = append(out, s)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func ids(ms ...*nxgv1.Membership) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.GetId()
	}
	return out
}

func sameIDs(t testing.TB, what string, got, want []string) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s = %q, want %q", what, got, want)
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("%s = %q, want %q", what, got, want)
		}
	}
}

func TestMembershipService(t *testing.T) {
	t.Parallel()
	from := time.Now().Add(-time.Hour).UTC().Truncate(time.Microsecond)

	t.Run("Authorization", func(t *testing.T) {
		t.Parallel()
		b := setupAPI(t)
		admin := membershipClient(t, b, auditTestUser(t, b, token.RoleAdmin))
		staffUser := auditTestUser(t, b, token.RoleStaff)
		staff := membershipClient(t, b, staffUser)
		memberUser := auditTestUser(t, b, token.RoleMember)
		member := membershipClient(t, b, memberUser)
		otherUser := auditTestUser(t, b, token.RoleMember)
		own, other := b.insertBranch(t, "Own"), b.insertBranch(t, "Other")
		addStaffBranch(t, b, staffUser.ID, own)

		// Admin: a branch and a network-wide membership.
		until := from.Add(30 * 24 * time.Hour)
		branchM := admin.mustGrant(&nxgv1.GrantMembershipRequest{UserId: memberUser.ID.String(), BranchId: other,
			ValidFrom: timestamppb.New(from), ValidUntil: timestamppb.New(until)})
		if branchM.GetBranchId() != other || branchM.GetUserId() != memberUser.ID.String() || !branchM.GetValidFrom().AsTime().Equal(from) ||
			!branchM.GetValidUntil().AsTime().Equal(until) || branchM.EndedAt != nil || branchM.GetCreatedBy() != admin.caller.ID.String() || branchM.CreatedAt == nil {
			t.Fatalf("granted = %v", branchM)
		}
		network := admin.mustGrant(&nxgv1.GrantMembershipRequest{UserId: memberUser.ID.String(), ValidFrom: timestamppb.New(from)})
		if network.GetBranchId() != "" || network.ValidUntil != nil {
			t.Fatalf("network-wide = %v", network)
		}

		// Staff: own branch only, never network-wide.
		staffM := staff.mustGrant(&nxgv1.GrantMembershipRequest{UserId: otherUser.ID.String(), BranchId: own, ValidFrom: timestamppb.New(from)})
		_, err := staff.grant(&nxgv1.GrantMembershipRequest{UserId: otherUser.ID.String(), BranchId: other, ValidFrom: timestamppb.New(from)})
		auditTestCode(t, err, connect.CodePermissionDenied, "branches they work at")
		_, err = staff.grant(&nxgv1.GrantMembershipRequest{UserId: otherUser.ID.String(), ValidFrom: timestamppb.New(from)})
		auditTestCode(t, err, connect.CodePermissionDenied, "network-wide")
		_, err = staff.end(branchM.GetId())
		auditTestCode(t, err, connect.CodePermissionDenied, "branches they work at")
		_, err = staff.end(network.GetId())
		auditTestCode(t, err, connect.CodePermissionDenied, "network-wide")

		// Members: no grants or ends; only their own list.
		_, err = member.grant(&nxgv1.GrantMembershipRequest{UserId: memberUser.ID.String(), BranchId: own, ValidFrom: timestamppb.New(from)})
		auditTestCode(t, err, connect.CodePermissionDenied, "staff")
		_, err = member.end(branchM.GetId())
		auditTestCode(t, err, connect.CodePermissionDenied, "staff")
		sameIDs(t, "member's own list", member.listIDs(&nxgv1.ListMembershipsRequest{}), ids(network, branchM))
		sameIDs(t, "member's own list by id", member.listIDs(&nxgv1.ListMembershipsRequest{UserId: memberUser.ID.String()}), ids(network, branchM))
		_, err = member.list(&nxgv1.ListMembershipsRequest{UserId: otherUser.ID.String()})
		auditTestCode(t, err, connect.CodePermissionDenied, "own")

		// Listing: staff see their branches only; admins see all.
		sameIDs(t, "staff list", staff.listIDs(&nxgv1.ListMembershipsRequest{}), ids(staffM))
		sameIDs(t, "staff list of a member", staff.listIDs(&nxgv1.ListMembershipsRequest{UserId: memberUser.ID.String()}), nil)
		_, err = staff.list(&nxgv1.ListMembershipsRequest{BranchId: other})
		auditTestCode(t, err, connect.CodePermissionDenied, "branches they work at")
		sameIDs(t, "admin list", admin.listIDs(&nxgv1.ListMembershipsRequest{}), ids(staffM, network, branchM))

		// Staff end at their own branch.
		if m, err := staff.end(staffM.GetId()); err != nil || m.EndedAt == nil {
			t.Fatalf("staff end = %v, %v", m, err)
		}

		a, s, m, o := admin.caller.ID.String(), staffUser.ID.String(), memberUser.ID.String(), otherUser.ID.String()
		want := []string{
			"membership.granted " + a + " " + m,
			"membership.granted " + a + " " + m,
			"membership.granted " + s + " " + o,
			"membership.read " + s + " ",
			"membership.read " + s + " " + m,
			"membership.read " + a + " ",
			"membership.ended " + s + " " + o,
		}
		sameIDs(t, "audit rows", membershipAuditRows(t, b), want)
	})

	t.Run("FiltersActiveOnlyAndPages", func(t *testing.T) {
		t.Parallel()
		b := setupAPI(t)
		admin := membershipClient(t, b, auditTestUser(t, b, token.RoleAdmin))
		alice, bob := auditTestUser(t, b, token.RoleMember), auditTestUser(t, b, token.RoleMember)
		x, y := b.insertBranch(t, "X"), b.insertBranch(t, "Y")
		now := time.Now()
		grant := func(user uuid.UUID, branch string, from time.Time, until *time.Time) *nxgv1.Membership {
			msg := &nxgv1.GrantMembershipRequest{UserId: user.String(), BranchId: branch, ValidFrom: timestamppb.New(from)}
			if until != nil {
				msg.ValidUntil = timestamppb.New(*until)
			}
			return admin.mustGrant(msg)
		}
		past := now.Add(-time.Hour)
		a1 := grant(alice.ID, x, now.Add(-48*time.Hour), nil)   // active
		a2 := grant(alice.ID, y, now.Add(-48*time.Hour), &past) // expired
		a3 := grant(alice.ID, x, now.Add(24*time.Hour), nil)    // future
		b1 := grant(bob.ID, x, now.Add(-time.Hour), nil)        // active, ended below
		b2 := grant(bob.ID, "", now.Add(-time.Hour), nil)       // active network-wide
		if _, err := admin.end(b1.GetId()); err != nil {
			t.Fatal(err)
		}

		sameIDs(t, "alice", admin.listIDs(&nxgv1.ListMembershipsRequest{UserId: alice.ID.String()}), ids(a3, a2, a1))
		sameIDs(t, "branch x", admin.listIDs(&nxgv1.ListMembershipsRequest{BranchId: x}), ids(b1, a3, a1))
		sameIDs(t, "alice at x", admin.listIDs(&nxgv1.ListMembershipsRequest{UserId: alice.ID.String(), BranchId: x}), ids(a3, a1))
		sameIDs(t, "active", admin.listIDs(&nxgv1.ListMembershipsRequest{ActiveOnly: true}), ids(b2, a1))
		sameIDs(t, "all, pages of 2", admin.listIDs(&nxgv1.ListMembershipsRequest{PageSize: 2}), ids(b2, b1, a3, a2, a1))
		sameIDs(t, "all, pages of 1", admin.listIDs(&nxgv1.ListMembershipsRequest{PageSize: 1}), ids(b2, b1, a3, a2, a1))
		res, err := admin.list(&nxgv1.ListMembershipsRequest{PageSize: 5})
		if err != nil || len(res.GetMemberships()) != 5 || res.GetNextPageToken() != "" {
			t.Fatalf("exact page = %v, %v; want 5 rows and no next page", res, err)
		}
		_, err = admin.list(&nxgv1.ListMembershipsRequest{PageToken: "garbage"})
		if connect.CodeOf(err) != connect.CodeInvalidArgument {
			t.Fatalf("bad page token: %v", err)
		}
	})

	t.Run("EndTwice", func(t *testing.T) {
		t.Parallel()
		b := setupAPI(t)
		admin := membershipClient(t, b, auditTestUser(t, b, token.RoleAdmin))
		member := auditTestUser(t, b, token.RoleMember)
		m := admin.mustGrant(&nxgv1.GrantMembershipRequest{UserId: member.ID.String(), ValidFrom: timestamppb.New(from)})
		ended, err := admin.end(m.GetId())
		if err != nil || ended.EndedAt == nil || ended.GetId() != m.GetId() {
			t.Fatalf("end = %v, %v", ended, err)
		}
		_, err = admin.end(m.GetId())
		auditTestCode(t, err, connect.CodeFailedPrecondition, "already ended")
		_, err = admin.end(uuid.NewString())
		auditTestCode(t, err, connect.CodeNotFound, "membership")
	})

	t.Run("BadInputAndNotFound", func(t *testing.T) {
		t.Parallel()
		b := setupAPI(t)
		admin := membershipClient(t, b, auditTestUser(t, b, token.RoleAdmin))
		member := auditTestUser(t, b, token.RoleMember)
		branch := b.insertBranch(t, "B")

		_, err := admin.grant(&nxgv1.GrantMembershipRequest{UserId: member.ID.String(), BranchId: branch,
			ValidFrom: timestamppb.New(from), ValidUntil: timestamppb.New(from.Add(-time.Minute))})
		auditTestCode(t, err, connect.CodeInvalidArgument, "valid_until")
		_, err = admin.grant(&nxgv1.GrantMembershipRequest{UserId: member.ID.String(), BranchId: branch,
			ValidFrom: timestamppb.New(from), ValidUntil: timestamppb.New(from)})
		auditTestCode(t, err, connect.CodeInvalidArgument, "valid_until")
		_, err = admin.grant(&nxgv1.GrantMembershipRequest{UserId: "not-a-uuid", ValidFrom: timestamppb.New(from)})
		auditTestCode(t, err, connect.CodeInvalidArgument, "user_id")
		_, err = admin.grant(&nxgv1.GrantMembershipRequest{UserId: member.ID.String(), BranchId: "nope", ValidFrom: timestamppb.New(from)})
		auditTestCode(t, err, connect.CodeInvalidArgument, "branch_id")
		_, err = admin.grant(&nxgv1.GrantMembershipRequest{UserId: member.ID.String()})
		auditTestCode(t, err, connect.CodeInvalidArgument, "valid_from")
		_, err = admin.end("nope")
		auditTestCode(t, err, connect.CodeInvalidArgument, "membership_id")

		unknown := uuid.NewString()
		_, err = admin.grant(&nxgv1.GrantMembershipRequest{UserId: unknown, BranchId: branch, ValidFrom: timestamppb.New(from)})
		auditTestCode(t, err, connect.CodeNotFound, "user "+unknown)
		_, err = admin.grant(&nxgv1.GrantMembershipRequest{UserId: member.ID.String(), BranchId: unknown, ValidFrom: timestamppb.New(from)})
		auditTestCode(t, err, connect.CodeNotFound, "branch "+unknown)
		// A closed account gets nothing new.
		if _, err := b.db.Pool.Exec(context.Background(), `UPDATE users SET deleted_at = now() WHERE id = $1`, member.ID); err != nil {
			t.Fatal(err)
		}
		_, err = admin.grant(&nxgv1.GrantMembershipRequest{UserId: member.ID.String(), BranchId: branch, ValidFrom: timestamppb.New(from)})
		auditTestCode(t, err, connect.CodeNotFound, "user "+member.ID.String())
		if rows := membershipAuditRows(t, b); len(rows) != 0 {
			t.Fatalf("audit rows of refused grants: %q", rows)
		}
	})
}

// TestMembershipActiveForBranch checks the query check-ins will use.
func TestMembershipActiveForBranch(t *testing.T) {
	t.Parallel()
	b := setupAPI(t)
	ctx := context.Background()
	q := dbsqlc.New()
	branch, other := uuid.MustParse(b.insertBranch(t, "Here")), uuid.MustParse(b.insertBranch(t, "There"))
	at := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	type grant struct {
		branch      *uuid.UUID
		from, until string
		ended       bool
	}
	cases := []struct {
		name   string
		grants []grant
		want   bool
	}{
		{"None", nil, false},
		{"Active", []grant{{branch: &branch, from: "2025-01-01", until: "2026-01-01"}}, true},
		{"OpenEnded", []grant{{branch: &branch, from: "2025-01-01"}}, true},
		{"StartsExactlyNow", []grant{{branch: &branch, from: "2025-06-01T12:00:00Z"}}, true},
		{"Future", []grant{{branch: &branch, from: "2025-07-01"}}, false},
		{"Expired", []grant{{branch: &branch, from: "2025-01-01", until: "2025-06-01"}}, false},
		{"RunsOutExactlyNow", []grant{{branch: &branch, from: "2025-01-01", until: "2025-06-01T12:00:00Z"}}, false},
		{"Ended", []grant{{branch: &branch, from: "2025-01-01", ended: true}}, false},
		{"NetworkWide", []grant{{from: "2025-01-01"}}, true},
		{"NetworkWideEnded", []grant{{from: "2025-01-01", ended: true}}, false},
		{"OtherBranch", []grant{{branch: &other, from: "2025-01-01"}}, false},
		{"OtherBranchAndExpiredHere", []grant{{branch: &other, from: "2025-01-01"}, {branch: &branch, from: "2024-01-01", until: "2025-01-01"}}, false},
	}
	for _, tc := range cases {
		user := auditTestUser(t, b, token.RoleMember)
		for _, g := range tc.grants {
			var until *string
			if g.until != "" {
				until = &g.until
			}
			if _, err := b.db.Pool.Exec(ctx,
				`INSERT INTO memberships (user_id, branch_id, valid_from, valid_until, ended_at) VALUES ($1, $2, $3::timestamptz, $4::timestamptz, CASE WHEN $5 THEN now() END)`,
				user.ID, g.branch, g.from, until, g.ended); err != nil {
				t.Fatal(err)
			}
		}
		// Another user's active membership never counts.
		got, err := q.MembershipActiveForBranch(ctx, b.db.Pool, dbsqlc.MembershipActiveForBranchParams{UserID: user.ID, BranchID: branch, At: at})
		if err != nil {
			t.Fatal(err)
		}
		if got != tc.want {
			t.Errorf("%s: active = %v, want %v", tc.name, got, tc.want)
		}
	}
}
