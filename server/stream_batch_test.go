package server

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"sync/atomic"
	"testing"
	"time"
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
