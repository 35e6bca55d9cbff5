package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"

	nxgv1 "github.com/nxg-fitness/nxg/gen/nxg/v1"
	"github.com/nxg-fitness/nxg/gen/nxg/v1/nxgv1connect"
)

// deviceNamePrefix marks the consoles this tool registers, so a later run
// can revoke what an interrupted one left behind without touching anybody
// else's devices.
const deviceNamePrefix = "nxg-load console "

// h2cClient is an HTTP client speaking HTTP/2 without TLS (prior
// knowledge), as the server does on a plain listener. Each one holds its
// own connection pool: the subscribers are spread over several so no
// connection carries more streams than the server allows (250).
func h2cClient() *http.Client {
	return h2cClientDialing((&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext)
}

// h2cClientDialing is h2cClient with its connections made by dial.
func h2cClientDialing(dial func(ctx context.Context, network, addr string) (net.Conn, error)) *http.Client {
	protocols := new(http.Protocols)
	protocols.SetUnencryptedHTTP2(true)
	return &http.Client{Transport: &http.Transport{
		Protocols:   protocols,
		DialContext: dial,
		HTTP2: &http.HTTP2Config{
			// Reads of many streams on one connection must not stall on
			// flow control while the tool is busy: a generous window.
			MaxReceiveBufferPerConnection: 16 << 20,
			MaxReceiveBufferPerStream:     1 << 20,
		},
	}}
}

// clientPool hands out h2c clients round robin, for unary calls.
type clientPool struct {
	clients []*http.Client
	next    atomic.Uint64
}

func newClientPool(n int) *clientPool {
	p := &clientPool{clients: make([]*http.Client, n)}
	for i := range p.clients {
		p.clients[i] = h2cClient()
	}
	return p
}

func (p *clientPool) get() *http.Client {
	return p.clients[p.next.Add(1)%uint64(len(p.clients))]
}

func (p *clientPool) close() {
	for _, c := range p.clients {
		c.CloseIdleConnections()
	}
}

// bearer sets the Authorization header of a request.
func bearer[T any](msg *T, token string) *connect.Request[T] {
	req := connect.NewRequest(msg)
	req.Header().Set("Authorization", "Bearer "+token)
	return req
}

// console is one simulated machine console: a registered device signed in.
type console struct {
	DeviceID  string
	MachineID string
	BranchID  string
	Token     string
	client    nxgv1connect.MachineServiceClient
	// fault is the fault flag this console reported last; the change driver
	// flips it, so every status report is a visible change.
	fault bool
	// staff makes this a stand-in that changes its machine with
	// SetMachineStatus (maintenance on and off) as the signed-in account.
	staff bool
}

// environment is what setup found and made through the public API.
type environment struct {
	Token    string // the account's access token
	Branch   *nxgv1.Branch
	Machines []*nxgv1.Machine // of the watched branch
	Consoles []*console
	devices  nxgv1connect.DeviceServiceClient
}

// setup signs in, picks the branch and provisions a console for each
// machine: the chosen branch's, or every branch's when allBranches.
func setup(ctx context.Context, cfg Config, pool *clientPool, logf func(string, ...any)) (*environment, error) {
	authClient := nxgv1connect.NewAuthServiceClient(pool.get(), cfg.Addr)
	login, err := authClient.Login(ctx, connect.NewRequest(&nxgv1.LoginRequest{
		Email: cfg.Email, Password: cfg.Password, DeviceName: "nxg-load",
	}))
	if err != nil {
		return nil, fmt.Errorf("sign in as %s: %w", cfg.Email, err)
	}
	env := &environment{Token: login.Msg.GetAccessToken()}
	env.devices = nxgv1connect.NewDeviceServiceClient(pool.get(), cfg.Addr)

	branches, err := listBranches(ctx, nxgv1connect.NewGymServiceClient(pool.get(), cfg.Addr), env.Token)
	if err != nil {
		return nil, err
	}
	env.Branch, err = pickBranch(branches, cfg.Branch)
	if err != nil {
		return nil, err
	}
	machineClient := nxgv1connect.NewMachineServiceClient(pool.get(), cfg.Addr)
	env.Machines, err = listMachines(ctx, machineClient, env.Token, env.Branch.GetId())
	if err != nil {
		return nil, err
	}
	if len(env.Machines) == 0 {
		return nil, fmt.Errorf("branch %s has no machines", env.Branch.GetName())
	}

	if cfg.ViaStaff {
		// The account itself makes the changes, one "console" per machine
		// that carries its token and no device.
		for _, m := range env.Machines {
			env.Consoles = append(env.Consoles, &console{
				MachineID: m.GetId(), BranchID: m.GetBranchId(), Token: env.Token, staff: true,
				client: nxgv1connect.NewMachineServiceClient(pool.get(), cfg.Addr),
			})
		}
		return env, nil
	}
	targets := []*nxgv1.Branch{env.Branch}
	if cfg.ReportRates != nil && cfg.AllBranches {
		targets = branches
	}
	for _, b := range targets {
		machines := env.Machines
		if b.GetId() != env.Branch.GetId() {
			if machines, err = listMachines(ctx, machineClient, env.Token, b.GetId()); err != nil {
				return nil, err
			}
		}
		if err := revokeLeftovers(ctx, env, b.GetId(), logf); err != nil {
			return nil, err
		}
		for _, m := range machines {
			c, err := provision(ctx, cfg, pool, env, m, logf)
			if err != nil {
				return nil, err
			}
			if c != nil {
				env.Consoles = append(env.Consoles, c)
			}
		}
	}
	if len(env.Consoles) == 0 {
		return nil, errors.New("no machine console could be registered (see the warnings above)")
	}
	return env, nil
}

func listBranches(ctx context.Context, c nxgv1connect.GymServiceClient, token string) ([]*nxgv1.Branch, error) {
	var out []*nxgv1.Branch
	page := ""
	for {
		res, err := c.ListBranches(ctx, bearer(&nxgv1.ListBranchesRequest{PageSize: 200, PageToken: page}, token))
		if err != nil {
			return nil, fmt.Errorf("list branches: %w", err)
		}
		out = append(out, res.Msg.GetBranches()...)
		if page = res.Msg.GetNextPageToken(); page == "" {
			return out, nil
		}
	}
}

// pickBranch finds the branch named or identified by want, or the first.
func pickBranch(branches []*nxgv1.Branch, want string) (*nxgv1.Branch, error) {
	if len(branches) == 0 {
		return nil, errors.New("the server lists no branches (is the database seeded?)")
	}
	if want == "" {
		return branches[0], nil
	}
	names := make([]string, 0, len(branches))
	for _, b := range branches {
		if b.GetId() == want || strings.EqualFold(b.GetName(), want) {
			return b, nil
		}
		names = append(names, b.GetName())
	}
	return nil, fmt.Errorf("no branch %q; there are: %s", want, strings.Join(names, ", "))
}

func listMachines(ctx context.Context, c nxgv1connect.MachineServiceClient, token, branchID string) ([]*nxgv1.Machine, error) {
	var out []*nxgv1.Machine
	page := ""
	for {
		res, err := c.ListMachines(ctx, bearer(&nxgv1.ListMachinesRequest{BranchId: branchID, PageSize: 500, PageToken: page}, token))
		if err != nil {
			return nil, fmt.Errorf("list machines of branch %s: %w", branchID, err)
		}
		out = append(out, res.Msg.GetMachines()...)
		if page = res.Msg.GetNextPageToken(); page == "" {
			return out, nil
		}
	}
}

// revokeLeftovers revokes the live consoles an earlier run registered
// (by name prefix) so their machines can take new ones.
func revokeLeftovers(ctx context.Context, env *environment, branchID string, logf func(string, ...any)) error {
	var stale []string
	page := ""
	for {
		res, err := env.devices.ListDevices(ctx, bearer(&nxgv1.ListDevicesRequest{BranchId: branchID, PageSize: 200, PageToken: page}, env.Token))
		if err != nil {
			return fmt.Errorf("list devices of branch %s: %w", branchID, err)
		}
		for _, d := range res.Msg.GetDevices() {
			if d.GetRevokedAt() == nil && strings.HasPrefix(d.GetName(), deviceNamePrefix) {
				stale = append(stale, d.GetId())
			}
		}
		if page = res.Msg.GetNextPageToken(); page == "" {
			break
		}
	}
	for _, id := range stale {
		if _, err := env.devices.RevokeDevice(ctx, bearer(&nxgv1.RevokeDeviceRequest{DeviceId: id}, env.Token)); err != nil {
			return fmt.Errorf("revoke leftover console %s: %w", id, err)
		}
	}
	if len(stale) > 0 {
		logf("revoked %d console(s) left by an earlier run", len(stale))
	}
	return nil
}

// provision registers a console for machine m and signs it in. A machine
// that already has somebody else's live console is skipped with a warning
// (nil console): the server allows one per machine.
func provision(ctx context.Context, cfg Config, pool *clientPool, env *environment, m *nxgv1.Machine, logf func(string, ...any)) (*console, error) {
	reg, err := env.devices.RegisterDevice(ctx, bearer(&nxgv1.RegisterDeviceRequest{
		BranchId:  m.GetBranchId(),
		Kind:      nxgv1.DeviceKind_DEVICE_KIND_MACHINE,
		MachineId: m.GetId(),
		Name:      deviceNamePrefix + m.GetName(),
	}, env.Token))
	if connect.CodeOf(err) == connect.CodeFailedPrecondition {
		logf("skipping machine %q: %v", m.GetName(), err)
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("register a console for machine %q: %w", m.GetName(), err)
	}
	c := &console{
		DeviceID:  reg.Msg.GetDevice().GetId(),
		MachineID: m.GetId(),
		BranchID:  m.GetBranchId(),
		client:    nxgv1connect.NewMachineServiceClient(pool.get(), cfg.Addr),
	}
	authClient := nxgv1connect.NewAuthServiceClient(pool.get(), cfg.Addr)
	login, err := authClient.DeviceLogin(ctx, connect.NewRequest(&nxgv1.DeviceLoginRequest{
		DeviceId: c.DeviceID, DeviceSecret: reg.Msg.GetDeviceSecret(),
	}))
	if err != nil {
		return nil, fmt.Errorf("device login of the console of %q: %w", m.GetName(), err)
	}
	c.Token = login.Msg.GetAccessToken()
	return c, nil
}

// report sends one ReportActivity as the console.
func (c *console) report(ctx context.Context, req *nxgv1.ReportActivityRequest) (*nxgv1.ReportActivityResponse, error) {
	res, err := c.client.ReportActivity(ctx, bearer(req, c.Token))
	if err != nil {
		return nil, err
	}
	return res.Msg, nil
}

// setFault makes one visible change: the fault flag (or, for a staff
// stand-in, maintenance) on or off. It returns the machine after it.
func (c *console) setFault(ctx context.Context, fault bool) (*nxgv1.Machine, error) {
	if c.staff {
		status := nxgv1.MachineStatus_MACHINE_STATUS_AVAILABLE
		if fault {
			status = nxgv1.MachineStatus_MACHINE_STATUS_MAINTENANCE
		}
		res, err := c.client.SetMachineStatus(ctx, bearer(&nxgv1.SetMachineStatusRequest{MachineId: c.MachineID, Status: status}, c.Token))
		if err != nil {
			return nil, err
		}
		return res.Msg.GetMachine(), nil
	}
	res, err := c.report(ctx, statusReport(fault))
	if err != nil {
		return nil, err
	}
	return res.GetMachine(), nil
}

func heartbeat() *nxgv1.ReportActivityRequest {
	return &nxgv1.ReportActivityRequest{Activity: &nxgv1.ReportActivityRequest_Heartbeat{Heartbeat: &nxgv1.Heartbeat{}}}
}

func statusReport(fault bool) *nxgv1.ReportActivityRequest {
	detail := ""
	if fault {
		detail = "nxg-load simulated fault"
	}
	return &nxgv1.ReportActivityRequest{Activity: &nxgv1.ReportActivityRequest_Status{
		Status: &nxgv1.StatusReport{Fault: fault, Detail: detail},
	}}
}

// prepare brings every console's machine online and out of fault before
// measuring, so the changes made later are exactly the driver's.
func prepare(ctx context.Context, env *environment) error {
	for _, c := range env.Consoles {
		if !c.staff {
			if _, err := c.report(ctx, heartbeat()); err != nil {
				return fmt.Errorf("first heartbeat of console %s: %w", c.DeviceID, err)
			}
		}
		if _, err := c.setFault(ctx, false); err != nil {
			return fmt.Errorf("clearing the fault of machine %s: %w", c.MachineID, err)
		}
		c.fault = false
	}
	return nil
}

// teardown revokes the consoles, with a fresh context: it runs after an
// interrupt too.
func teardown(env *environment, logf func(string, ...any)) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, c := range env.Consoles {
		if c.staff {
			continue
		}
		if _, err := env.devices.RevokeDevice(ctx, bearer(&nxgv1.RevokeDeviceRequest{DeviceId: c.DeviceID}, env.Token)); err != nil {
			logf("revoking console %s: %v", c.DeviceID, err)
		}
	}
}
