package server

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"syscall"
	"time"
	"unsafe"
)

// A live stream that sends each message to the network on its own pays a
// write system call (and, over HTTP/2, a hand-off to the connection's
// writer goroutine) per message. With thousands of watchers of one branch
// those writes are most of the server's work. A streamBatch lets a stream
// that has several messages queued send them all and then reach the
// network once: hold, send each, release.
//
// Nothing waits to fill a batch: a stream holds only while it drains what
// is already queued. When the server keeps up, every batch is one message
// and latency is untouched; when it falls behind, messages queue up, the
// batches grow, and the cost per message falls until it keeps up again.

// streamBatch defers a stream's writes to the network between hold and
// release. Both are called only by the goroutine that sends the stream's
// messages.
type streamBatch interface {
	// hold starts a batch: messages sent until release stay in memory.
	hold()
	// release ends the batch and sends what it holds in one write.
	release() error
}

// streamBatchLimit is the most messages a stream sends in one batch, so
// that one write stays a few tens of kilobytes and the first message of a
// long backlog is not held back behind all the others.
const streamBatchLimit = 64

// noBatch is the batch of a stream whose writes cannot be deferred (a
// handler called without withStreamBatching): every message goes out at
// once.
type noBatch struct{}

func (noBatch) hold()          {}
func (noBatch) release() error { return nil }

// streamBatchKey is the context key of a request's streamBatch.
type streamBatchKey struct{}

// streamBatchFrom returns the streamBatch withStreamBatching gave the
// request, or one that does not batch.
func streamBatchFrom(ctx context.Context) streamBatch {
	if b, ok := ctx.Value(streamBatchKey{}).(streamBatch); ok {
		return b
	}
	return noBatch{}
}

// withStreamBatching lets the stream handlers of next batch their flushes:
// Connect, gRPC and gRPC-Web flush the response after every message they
// send, and this wrapper turns the flushes inside a batch into one at its
// release. Unary calls are untouched, since their single flush comes after
// the handler returns, outside any batch.
func withStreamBatching(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f, ok := w.(http.Flusher)
		if !ok {
			next.ServeHTTP(w, r)
			return
		}
		bw := &batchedFlushWriter{ResponseWriter: w, flusher: f}
		next.ServeHTTP(bw, r.WithContext(context.WithValue(r.Context(), streamBatchKey{}, streamBatch(bw))))
	})
}

// batchedFlushWriter is an http.ResponseWriter whose flushes wait for the
// end of a batch. Only the handler's goroutine uses it, so it needs no lock.
type batchedFlushWriter struct {
	http.ResponseWriter
	flusher http.Flusher
	holding bool
	pending bool
}

// Flush flushes now, or at release when a batch is held.
func (w *batchedFlushWriter) Flush() {
	if w.holding {
		w.pending = true
		return
	}
	w.flusher.Flush()
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *batchedFlushWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *batchedFlushWriter) hold() { w.holding = true }

// release flushes once if any message was sent in the batch. A failed
// write is not reported here: the stream's next send fails with it.
func (w *batchedFlushWriter) release() error {
	w.holding = false
	if w.pending {
		w.pending = false
		w.flusher.Flush()
	}
	return nil
}

// batchingHijacker is an http.ResponseWriter for websocket.Accept whose
// hijacked connection batches: the WebSocket library flushes every frame
// to the connection, and batchingConn keeps those writes in memory while a
// batch is held.
type batchingHijacker struct {
	http.ResponseWriter
	writeTimeout time.Duration
	conn         *batchingConn
}

// Hijack returns the connection wrapped in a batchingConn, with a write
// buffer that writes through it. Anything the server had buffered (the
// 101 response) is flushed to the connection first.
func (h *batchingHijacker) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	hj, ok := h.ResponseWriter.(http.Hijacker)
	if !ok {
		return nil, nil, errors.New("server: response writer cannot be hijacked")
	}
	conn, brw, err := hj.Hijack()
	if err != nil {
		return nil, nil, err
	}
	if err := brw.Writer.Flush(); err != nil {
		_ = conn.Close()
		return nil, nil, err
	}
	h.conn = newBatchingConn(conn, h.writeTimeout)
	brw.Writer.Reset(h.conn)
	return h.conn, brw, nil
}

// Unwrap lets the library and http.ResponseController reach the
// underlying writer for anything but hijacking.
func (h *batchingHijacker) Unwrap() http.ResponseWriter { return h.ResponseWriter }

// batchingConn is a hijacked WebSocket connection whose writes can be
// held in memory and sent as one. It also puts a deadline on every real
// write, so a client that stops reading cannot block a writer for ever;
// that is why the socket's frames are written without a context deadline
// of their own, which would cost a timer per frame.
//
// It is also a machine feed's direct sink (machineDirectSink): the feed
// appends change frames and writes them without blocking. Bytes such a
// write leaves behind stay in held and go out first on the next write.
type batchingConn struct {
	net.Conn
	writeTimeout time.Duration
	// raw is the connection's file descriptor for writes that must not
	// wait, or nil when the connection has none (then tryHold refuses).
	raw syscall.RawConn

	// mu serialises writes: the stream's goroutine, the pinger, the
	// closing handshake and the machine feed all write.
	mu      sync.Mutex
	holding bool
	held    []byte
}

func newBatchingConn(conn net.Conn, writeTimeout time.Duration) *batchingConn {
	c := &batchingConn{Conn: conn, writeTimeout: writeTimeout}
	if sc, ok := conn.(syscall.Conn); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			c.raw = raw
		}
	}
	return c
}

// Write writes p now, or keeps it for release while a batch is held.
func (c *batchingConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.holding {
		c.held = append(c.held, p...)
		return len(p), nil
	}
	if len(c.held) > 0 {
		// What a direct write left behind goes first.
		c.held = append(c.held, p...)
		if err := c.writeHeldLocked(); err != nil {
			return 0, err
		}
		return len(p), nil
	}
	return c.writeLocked(p)
}

func (c *batchingConn) writeLocked(p []byte) (int, error) {
	if err := c.SetWriteDeadline(time.Now().Add(c.writeTimeout)); err != nil {
		return 0, err
	}
	return c.Conn.Write(p)
}

// writeHeldLocked writes everything held, waiting up to the write
// timeout, and empties held.
func (c *batchingConn) writeHeldLocked() error {
	_, err := c.writeLocked(c.held)
	if cap(c.held) > 64<<10 {
		// A snapshot of a large branch made the buffer big; do not keep
		// that much per idle socket.
		c.held = nil
	} else {
		c.held = c.held[:0]
	}
	return err
}

func (c *batchingConn) hold() {
	c.mu.Lock()
	c.holding = true
	c.mu.Unlock()
}

// release writes what the batch held in one write.
func (c *batchingConn) release() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.holding = false
	if len(c.held) == 0 {
		return nil
	}
	if err := c.writeHeldLocked(); err != nil {
		// The library would have reported a failed frame write the same
		// way: the peer is gone or stopped reading.
		return fmt.Errorf("%w: %w", errWSPeerGone, err)
	}
	return nil
}

// tryHold starts a direct write if nobody else is writing and nothing is
// left from before; it never waits. On true, mu stays locked until
// releaseNow.
func (c *batchingConn) tryHold() bool {
	if c.raw == nil || !c.mu.TryLock() {
		return false
	}
	if c.holding || len(c.held) > 0 {
		c.mu.Unlock()
		return false
	}
	return true
}

// appendChange adds the text frame of one WatchMachines change message.
func (c *batchingConn) appendChange(seq uint64, ev *machineEvent) {
	c.held = appendMachineChangeFrame(c.held, seq, ev.jsonBytes())
}

// releaseNow writes what the direct write holds with one system call that
// does not wait, keeps what the socket did not take, and unlocks mu. It
// reports whether everything went out. A failed write is not reported
// here: the next, waiting write meets the same error.
func (c *batchingConn) releaseNow() bool {
	defer c.mu.Unlock()
	if len(c.held) == 0 {
		return true
	}
	var n int
	err := c.raw.Write(func(fd uintptr) bool {
		n = writeNoWait(fd, c.held)
		return true // one attempt: never wait for the socket
	})
	if err != nil || n <= 0 {
		return false
	}
	if n == len(c.held) {
		c.held = c.held[:0]
		return true
	}
	c.held = c.held[:copy(c.held, c.held[n:])]
	return false
}

// writeNoWait writes b to the non-blocking socket fd with one system call
// and returns how much the socket took (0 on any error, EAGAIN included).
//
// It is a raw system call, not syscall.Write, because the write cannot
// block, and telling the scheduler that it might is what costs: the
// machine feed makes hundreds of these in one step of a pass, and for
// each syscall.Write the runtime may hand the feed's processor to another
// goroutine, so that the rest of the step waits in the run queue behind
// whatever runs next. At 5,000 WebSockets on the benchmark machine this
// took the end of a round from p50 140 ms to 99 ms after the commit, and
// the server's CPU per delivered message from 3.3 to 3.1 µs
// (docs/performance.md).
func writeNoWait(fd uintptr, b []byte) int {
	if len(b) == 0 {
		return 0
	}
	n, _, errno := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
	if errno != 0 {
		return 0
	}
	return int(n)
}
