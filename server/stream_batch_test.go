package server

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// flushCounter is an http.ResponseWriter that counts the flushes reaching
// it, standing in for the HTTP/2 connection a flush would hand data to.
type flushCounter struct {
	*httptest.ResponseRecorder
	flushes int
}

func (f *flushCounter) Flush() { f.flushes++ }

func TestBatchedFlushWriter(t *testing.T) {
	var batch streamBatch
	inner := &flushCounter{ResponseRecorder: httptest.NewRecorder()}
	h := withStreamBatching(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		batch = streamBatchFrom(r.Context())
		f := w.(http.Flusher)

		// Outside a batch every flush goes through, as Connect expects.
		_, _ = w.Write([]byte("a"))
		f.Flush()
		if inner.flushes != 1 {
			t.Errorf("flush outside a batch: %d flushes reached the connection, want 1", inner.flushes)
		}

		// Inside one, three messages cost one flush, at release.
		batch.hold()
		for _, m := range []string{"b", "c", "d"} {
			_, _ = w.Write([]byte(m))
			f.Flush()
		}
		if inner.flushes != 1 {
			t.Errorf("flushes inside a held batch reached the connection: %d, want still 1", inner.flushes)
		}
		if err := batch.release(); err != nil {
			t.Errorf("release: %v", err)
		}
		if inner.flushes != 2 {
			t.Errorf("after release: %d flushes, want 2", inner.flushes)
		}

		// A batch in which nothing was sent does not flush.
		batch.hold()
		_ = batch.release()
		if inner.flushes != 2 {
			t.Errorf("empty batch flushed: %d flushes, want 2", inner.flushes)
		}
		if got := http.NewResponseController(w).Flush(); got != nil {
			t.Errorf("ResponseController cannot reach the writer: %v", got)
		}
	}))
	h.ServeHTTP(inner, httptest.NewRequest(http.MethodPost, "/", nil))
	if got := inner.Body.String(); got != "abcd" {
		t.Errorf("body = %q, want every message in order", got)
	}
	if _, ok := batch.(*batchedFlushWriter); !ok {
		t.Errorf("handler got %T, want the batching writer", batch)
	}
}

func TestStreamBatchFromWithoutMiddleware(t *testing.T) {
	b := streamBatchFrom(context.Background())
	b.hold()
	if err := b.release(); err != nil {
		t.Fatalf("release of a non-batching stream: %v", err)
	}
	if _, ok := b.(noBatch); !ok {
		t.Fatalf("streamBatchFrom(no middleware) = %T, want noBatch", b)
	}
}

// writeCounter counts the writes that reach a real TCP connection.
type writeCounter struct {
	net.Conn
	writes atomic.Int32
}

func (c *writeCounter) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			accepted <- nil
			return
		}
		accepted <- c
	}()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server = <-accepted
	if server == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { _ = client.Close(); _ = server.Close() })
	return client, server
}

func TestBatchingConn(t *testing.T) {
	client, server := tcpPair(t)
	counted := &writeCounter{Conn: server}
	c := &batchingConn{Conn: counted, writeTimeout: 5 * time.Second}

	// Unheld writes go straight out.
	if _, err := c.Write([]byte("one,")); err != nil {
		t.Fatal(err)
	}
	// Held writes (a frame flushed per message by the WebSocket library)
	// go out as one at release.
	c.hold()
	for _, m := range []string{"two,", "three,", "four"} {
		if n, err := c.Write([]byte(m)); err != nil || n != len(m) {
			t.Fatalf("held write = %d, %v", n, err)
		}
	}
	if got := counted.writes.Load(); got != 1 {
		t.Fatalf("writes reached the connection while held: %d, want 1", got)
	}
	if err := c.release(); err != nil {
		t.Fatalf("release: %v", err)
	}
	if got := counted.writes.Load(); got != 2 {
		t.Fatalf("writes after release: %d, want 2 (one for the whole batch)", got)
	}
	// An empty batch writes nothing.
	c.hold()
	if err := c.release(); err != nil || counted.writes.Load() != 2 {
		t.Fatalf("empty batch: err %v, writes %d", err, counted.writes.Load())
	}

	want := "one,two,three,four"
	got := make([]byte, len(want))
	_ = client.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(client, got); err != nil {
		t.Fatal(err)
	}
	if string(got) != want {
		t.Fatalf("peer read %q, want %q", got, want)
	}
}

func TestBatchingConnWriteDeadline(t *testing.T) {
	// net.Pipe is unbuffered: a write blocks until the peer reads, as a
	// socket does once a client stops reading and the buffers fill.
	peer, server := net.Pipe()
	defer peer.Close()
	c := &batchingConn{Conn: server, writeTimeout: 50 * time.Millisecond}
	defer c.Close()

	start := time.Now()
	if _, err := c.Write([]byte("stuck")); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("write to a peer that never reads: %v, want a deadline error", err)
	}
	c.hold()
	_, _ = c.Write([]byte("stuck again"))
	err := c.release()
	if !errors.Is(err, errWSPeerGone) || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("release to a peer that never reads: %v, want errWSPeerGone wrapping the deadline", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("the deadline did not bound the writes: %v", d)
	}
}

func TestBatchingHijacker(t *testing.T) {
	// A real HTTP/1.1 server: the hijacked connection's buffered writer
	// must write through the batching connection, after what the server
	// had buffered.
	hijacked := make(chan *batchingHijacker, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := &batchingHijacker{ResponseWriter: w, writeTimeout: 5 * time.Second}
		conn, brw, err := h.Hijack()
		if err != nil {
			t.Errorf("hijack: %v", err)
			return
		}
		defer conn.Close()
		if conn != net.Conn(h.conn) {
			t.Errorf("Hijack returned %T, want the batching connection", conn)
		}
		h.conn.hold()
		_, _ = brw.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\n")
		_ = brw.Flush()
		_, _ = brw.WriteString("hello")
		_ = brw.Flush()
		if err := h.conn.release(); err != nil {
			t.Errorf("release: %v", err)
		}
		hijacked <- h
	}))
	defer srv.Close()

	res, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(bufio.NewReader(res.Body))
	if err != nil || string(body) != "hello" {
		t.Fatalf("body %q, err %v", body, err)
	}
	h := <-hijacked
	if h.Unwrap() == nil {
		t.Fatal("Unwrap returned nil")
	}
}

func TestBatchingHijackerRefusesNonHijacker(t *testing.T) {
	h := &batchingHijacker{ResponseWriter: httptest.NewRecorder()}
	if _, _, err := h.Hijack(); err == nil {
		t.Fatal("hijacking a writer that cannot be hijacked succeeded")
	}
}

// directChange is a machine event whose JSON encoding is body.
func directChange(body string) *machineEvent {
	ev := &machineEvent{}
	ev.jsonOnce.Do(func() { ev.json = []byte(body) })
	return ev
}

func TestBatchingConnDirectWrites(t *testing.T) {
	client, server := tcpPair(t)
	c := newBatchingConn(server, 5*time.Second)
	if c.raw == nil {
		t.Fatal("a TCP connection has no raw descriptor for direct writes")
	}
	var want []byte

	// A direct write goes out whole, at once.
	if !c.tryHold() {
		t.Fatal("tryHold refused an idle connection")
	}
	c.appendChange(7, directChange(`{"id":"a"}`))
	want = appendMachineChangeFrame(want, 7, []byte(`{"id":"a"}`))
	if !c.releaseNow() {
		t.Fatal("releaseNow left a small write unfinished")
	}

	// A batch held by the stream's goroutine, or another writer holding
	// the connection, makes tryHold refuse rather than wait.
	c.hold()
	if c.tryHold() {
		t.Fatal("tryHold took a connection whose batch is held")
	}
	if err := c.release(); err != nil {
		t.Fatal(err)
	}
	c.mu.Lock()
	if c.tryHold() {
		t.Fatal("tryHold took a connection another writer holds")
	}
	c.mu.Unlock()

	// A peer that does not read fills the socket: the direct write keeps
	// what did not go out, and tryHold refuses until it has been written.
	big := `{"pad":"` + strings.Repeat("x", 60<<10) + `"}`
	seq := uint64(8)
	for done := false; !done; seq++ {
		if seq > 10_000 {
			t.Fatal("the socket never filled")
		}
		if !c.tryHold() {
			t.Fatal("tryHold refused while everything had gone out")
		}
		c.appendChange(seq, directChange(big))
		want = appendMachineChangeFrame(want, seq, []byte(big))
		done = !c.releaseNow()
	}
	if c.tryHold() {
		t.Fatal("tryHold took a connection with bytes left over")
	}

	// The next ordinary write (a ping, the library's next frame) sends
	// the leftover first, waiting for the peer to read.
	want = append(want, "ping"...)
	got := make(chan []byte, 1)
	go func(size int) {
		_ = client.SetReadDeadline(time.Now().Add(10 * time.Second))
		b := make([]byte, size)
		_, _ = io.ReadFull(client, b)
		got <- b
	}(len(want))
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	if b := <-got; !bytes.Equal(b, want) {
		t.Fatalf("peer read %d bytes, not the %d written in order", len(b), len(want))
	}
	if !c.tryHold() {
		t.Fatal("tryHold refused after the leftover went out")
	}
	if !c.releaseNow() {
		t.Fatal("an empty direct write did not finish")
	}
}

func TestBatchingConnWithoutRawDescriptor(t *testing.T) {
	// net.Pipe has no file descriptor: direct writes are refused and the
	// stream's goroutine writes everything.
	_, server := net.Pipe()
	defer server.Close()
	c := newBatchingConn(server, time.Second)
	if c.tryHold() {
		t.Fatal("tryHold took a connection without a raw descriptor")
	}
}

// TestMachineChangeFrameOverWebSocket has the real WebSocket client read
// frames written directly, at each of the three payload length encodings.
func TestMachineChangeFrameOverWebSocket(t *testing.T) {
	bodies := []string{
		`{"id":"short"}`, // 7-bit length
		`{"pad":"` + strings.Repeat("m", 300) + `"}`,    // 16-bit length
		`{"pad":"` + strings.Repeat("l", 70_000) + `"}`, // 64-bit length
		`{"pad":"` + strings.Repeat("e", 126-35) + `"}`, // around the first boundary
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := &batchingHijacker{ResponseWriter: w, writeTimeout: 5 * time.Second}
		conn, err := websocket.Accept(h, r, &websocket.AcceptOptions{CompressionMode: websocket.CompressionDisabled})
		if err != nil {
			t.Errorf("accept: %v", err)
			return
		}
		defer func() { _ = conn.CloseNow() }()
		for i, b := range bodies {
			if !h.conn.tryHold() {
				t.Error("tryHold refused an idle socket")
				return
			}
			h.conn.appendChange(uint64(i+1), directChange(b))
			if !h.conn.releaseNow() {
				// The leftover goes out with the next ordinary write.
				_ = h.conn.release()
			}
		}
		// Wait for the client to close.
		_, _, _ = conn.Read(context.Background())
	}))
	defer srv.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.CloseNow() }()
	conn.SetReadLimit(1 << 20)
	for i, b := range bodies {
		typ, data, err := conn.Read(ctx)
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if want := machineChangeFrame(uint64(i+1), []byte(b)); typ != websocket.MessageText || !bytes.Equal(data, want) {
			t.Fatalf("frame %d: %v message of %d bytes, want the %d-byte text %.40q", i, typ, len(data), len(want), want)
		}
	}
	_ = conn.Close(websocket.StatusNormalClosure, "")
}
