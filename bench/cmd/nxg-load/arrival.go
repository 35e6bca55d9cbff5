package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"
)

// The tool runs thousands of subscribers on one core. When that core is
// busy, a message can sit in its socket for a while before the
// subscriber's goroutine gets to read it: the Go runtime looks for
// readable sockets only when it runs out of other work, or every 10 ms
// otherwise. That wait is the tool's, not the server's; a real client has
// a processor of its own. So the tool asks the kernel to stamp each
// arriving segment with its arrival time (SO_TIMESTAMPNS), reads the stamp
// with every read, and measures a message's latency to when its last byte
// arrived at the client's socket. The time the tool's goroutine read it is
// reported beside it.

// arrivalConn is a TCP connection that remembers when the bytes it last
// read arrived.
type arrivalConn struct {
	*net.TCPConn
	raw syscall.RawConn
	// oob receives the read's control message: one timestamp.
	oob []byte
	// last is the arrival of the most recent bytes read (Unix
	// nanoseconds), 0 when they had no stamp.
	last atomic.Int64
	// frames, when set, follows the connection's HTTP/2 frames to stamp
	// each stream's messages with their own arrivals (h2arrival.go).
	frames *frameTracker
}

// arrivalHolder is where a dial puts the connection it made, so that the
// subscriber that caused the dial can read its arrival times. A later dial
// through the same holder (a reconnect) replaces it.
type arrivalHolder struct {
	conn atomic.Pointer[arrivalConn]
}

// lastArrival returns when the bytes most recently read on the held
// connection arrived, or the zero time if that is unknown.
func (h *arrivalHolder) lastArrival() time.Time {
	if h == nil {
		return time.Time{}
	}
	c := h.conn.Load()
	if c == nil {
		return time.Time{}
	}
	ns := c.last.Load()
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, ns)
}

// arrivalHolderKey is the context key of the holder a dial fills.
type arrivalHolderKey struct{}

// withArrivalHolder returns ctx carrying h, for dials made under ctx.
func withArrivalHolder(ctx context.Context, h *arrivalHolder) context.Context {
	return context.WithValue(ctx, arrivalHolderKey{}, h)
}

// arrivalDialer dials TCP connections that stamp arrivals. The holder is
// fixed, when given, or taken from the dial's context (withArrivalHolder).
// With a registry, the connections follow their HTTP/2 frames to stamp the
// messages of the streams registered there.
func arrivalDialer(fixed *arrivalHolder, registry *streamRegistry) func(ctx context.Context, network, addr string) (net.Conn, error) {
	d := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		ac, err := newArrivalConn(c)
		if err != nil {
			_ = c.Close()
			return nil, err
		}
		if registry != nil {
			ac.frames = newFrameTracker(registry)
		}
		h := fixed
		if h == nil {
			h, _ = ctx.Value(arrivalHolderKey{}).(*arrivalHolder)
		}
		if h != nil {
			h.conn.Store(ac)
		}
		return ac, nil
	}
}

// newArrivalConn turns on arrival stamps for c, which must be TCP.
func newArrivalConn(c net.Conn) (*arrivalConn, error) {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return nil, fmt.Errorf("arrival stamps need a TCP connection, not %T", c)
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return nil, err
	}
	var serr error
	if err := raw.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_TIMESTAMPNS, 1)
	}); err != nil {
		return nil, err
	}
	if serr != nil {
		return nil, fmt.Errorf("turn on SO_TIMESTAMPNS: %w", serr)
	}
	return &arrivalConn{TCPConn: tc, raw: raw, oob: make([]byte, syscall.CmsgSpace(int(unsafe.Sizeof(syscall.Timespec{}))))}, nil
}

// Read reads like the TCP connection's own Read (deadlines included) and
// records the arrival stamp the kernel returns with the bytes.
func (c *arrivalConn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	var n, oobn int
	var rerr error
	err := c.raw.Read(func(fd uintptr) bool {
		n, oobn, _, _, rerr = syscall.Recvmsg(int(fd), p, c.oob, 0)
		return !errors.Is(rerr, syscall.EAGAIN)
	})
	if err != nil {
		return 0, err
	}
	if rerr != nil {
		return 0, &net.OpError{Op: "read", Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: rerr}
	}
	if n == 0 {
		return 0, io.EOF
	}
	// Bytes without a stamp clear the last one, so that they are never
	// taken to have arrived when earlier bytes did. The kernel stamps
	// arrivals from a moment after the first socket of the machine asks.
	ts, _ := arrivalStamp(c.oob[:oobn])
	c.last.Store(ts)
	if c.frames != nil {
		c.frames.received(p[:n], ts)
	}
	return n, nil
}

// Write writes like the TCP connection's own Write, after showing the
// bytes to the frame tracker, if any: a request's headers are decoded
// before its response can arrive.
func (c *arrivalConn) Write(p []byte) (int, error) {
	if c.frames != nil {
		c.frames.sent(p)
	}
	return c.TCPConn.Write(p)
}

// arrivalStamp finds the SCM_TIMESTAMPNS message in oob and returns its
// time in Unix nanoseconds. It parses the one message the socket is asked
// for without allocating, since it runs on every read.
func arrivalStamp(oob []byte) (int64, bool) {
	const hdr = int(unsafe.Sizeof(syscall.Cmsghdr{}))
	for len(oob) >= hdr {
		h := (*syscall.Cmsghdr)(unsafe.Pointer(&oob[0]))
		size := int(h.Len)
		if size < hdr || size > len(oob) {
			return 0, false
		}
		if h.Level == syscall.SOL_SOCKET && h.Type == syscall.SCM_TIMESTAMPNS && size-syscall.CmsgLen(0) >= int(unsafe.Sizeof(syscall.Timespec{})) {
			ts := (*syscall.Timespec)(unsafe.Pointer(&oob[syscall.CmsgLen(0)]))
			return ts.Nano(), true
		}
		oob = oob[min(syscall.CmsgSpace(size-syscall.CmsgLen(0)), len(oob)):]
	}
	return 0, false
}
