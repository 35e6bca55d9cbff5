package main

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"
	"unsafe"
)

func TestArrivalConnStampsReads(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()

	holder := &arrivalHolder{}
	if !holder.lastArrival().IsZero() {
		t.Fatal("an empty holder has an arrival")
	}
	// The holder comes with the dial's context when the dialer has none.
	c, err := arrivalDialer(nil, nil)(withArrivalHolder(context.Background(), holder), "tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	peer := <-accepted
	if peer == nil {
		t.Fatal("accept failed")
	}
	defer peer.Close()
	if holder.conn.Load() != c {
		t.Fatal("the dial did not put its connection in the holder")
	}
	if !holder.lastArrival().IsZero() {
		t.Fatal("an arrival before anything was read")
	}

	// The kernel turns stamping on a moment after the first socket of the
	// machine asks for it: until then reads have no stamp, and the
	// arrival is unknown rather than an older one.
	buf := make([]byte, 16)
	for tries := 0; ; tries++ {
		if tries == 100 {
			t.Fatal("no read was stamped in 100 tries")
		}
		if _, err := peer.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Read(buf); err != nil {
			t.Fatal(err)
		}
		if !holder.lastArrival().IsZero() {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}

	// Bytes sent, then read 50 ms later: the stamp is their arrival, not
	// the read.
	sent := time.Now()
	if _, err := peer.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	n, err := c.Read(buf)
	read := time.Now()
	if err != nil || string(buf[:n]) != "hello" {
		t.Fatalf("read %q, %v", buf[:n], err)
	}
	arrived := holder.lastArrival()
	if arrived.Before(sent.Add(-time.Millisecond)) || arrived.After(read) || read.Sub(arrived) < 40*time.Millisecond {
		t.Fatalf("arrival %v after the send, read %v after it; want the arrival between, about 50 ms before the read",
			arrived.Sub(sent), read.Sub(sent))
	}
	if n, err := c.Read(nil); n != 0 || err != nil {
		t.Fatalf("empty read = %d, %v", n, err)
	}

	// Bytes without a stamp leave the arrival unknown, not the earlier one.
	ac := c.(*arrivalConn)
	if err := ac.raw.Control(func(fd uintptr) {
		err = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_TIMESTAMPNS, 0)
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := peer.Write([]byte("unstamped")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, buf[:9]); err != nil {
		t.Fatal(err)
	}
	if got := holder.lastArrival(); !got.IsZero() {
		t.Fatalf("after an unstamped read the arrival is %v, want unknown", got)
	}

	// A read deadline still works, as on the plain connection.
	if err := c.SetReadDeadline(time.Now().Add(20 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Read(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read past the deadline = %v", err)
	}
	if err := c.SetReadDeadline(time.Time{}); err != nil {
		t.Fatal(err)
	}
	// The peer's close is the end of the stream.
	_ = peer.Close()
	if _, err := c.Read(buf); !errors.Is(err, io.EOF) {
		t.Fatalf("read after the peer closed = %v, want EOF", err)
	}
	_ = c.Close()
	if _, err := c.Read(buf); err == nil {
		t.Fatal("read of a closed connection succeeded")
	}
}

func TestArrivalDialerErrors(t *testing.T) {
	// Nothing listens on a port just closed.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	if _, err := arrivalDialer(&arrivalHolder{}, nil)(context.Background(), "tcp", addr); err == nil {
		t.Fatal("dial of a closed port succeeded")
	}
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if _, err := newArrivalConn(a); err == nil {
		t.Fatal("a pipe was accepted as TCP")
	}
	var nilHolder *arrivalHolder
	if !nilHolder.lastArrival().IsZero() {
		t.Fatal("a nil holder has an arrival")
	}
}

func TestArrivalStamp(t *testing.T) {
	hdr := int(unsafe.Sizeof(syscall.Cmsghdr{}))
	msg := func(level, typ int32, data []byte) []byte {
		b := make([]byte, syscall.CmsgSpace(len(data)))
		h := (*syscall.Cmsghdr)(unsafe.Pointer(&b[0]))
		h.Level, h.Type = level, typ
		h.SetLen(syscall.CmsgLen(len(data)))
		copy(b[syscall.CmsgLen(0):], data)
		return b
	}
	ts := make([]byte, 16)
	binary.NativeEndian.PutUint64(ts[0:], 1_700_000_000)
	binary.NativeEndian.PutUint64(ts[8:], 123)
	want := int64(1_700_000_000)*1e9 + 123

	if got, ok := arrivalStamp(msg(syscall.SOL_SOCKET, syscall.SCM_TIMESTAMPNS, ts)); !ok || got != want {
		t.Fatalf("stamp = %d, %v; want %d", got, ok, want)
	}
	// Found after another message.
	other := msg(syscall.SOL_SOCKET, syscall.SCM_RIGHTS, []byte{1, 2, 3, 4})
	if got, ok := arrivalStamp(append(other, msg(syscall.SOL_SOCKET, syscall.SCM_TIMESTAMPNS, ts)...)); !ok || got != want {
		t.Fatalf("stamp after another message = %d, %v", got, ok)
	}
	for name, oob := range map[string][]byte{
		"empty":     nil,
		"short":     make([]byte, hdr-1),
		"other":     other,
		"truncated": msg(syscall.SOL_SOCKET, syscall.SCM_TIMESTAMPNS, ts)[:hdr+4],
		"too small": msg(syscall.SOL_SOCKET, syscall.SCM_TIMESTAMPNS, ts[:8]),
	} {
		if _, ok := arrivalStamp(oob); ok {
			t.Errorf("%s: a stamp was found", name)
		}
	}
	// A length below the header's own size is malformed.
	bad := msg(syscall.SOL_SOCKET, syscall.SCM_TIMESTAMPNS, ts)
	(*syscall.Cmsghdr)(unsafe.Pointer(&bad[0])).SetLen(hdr - 1)
	if _, ok := arrivalStamp(bad); ok {
		t.Error("a malformed length was read")
	}
}
