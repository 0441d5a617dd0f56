package ingress

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

func itoa(n int) string { return strconv.Itoa(n) }

func readResponse(t *testing.T, c net.Conn) (*http.Response, string) {
	t.Helper()
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

const postHead = "POST /v1/messages HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + tokDOL + "\r\nContent-Type: application/json\r\n"

// streamChunked writes a chunked body of n bytes ("n<0": without end) on c in
// a goroutine the caller waits for; write errors end it (the server hung up).
func streamChunked(c net.Conn, n int64, wg *sync.WaitGroup) {
	wg.Add(1)
	go func() {
		defer wg.Done()
		chunk := []byte(strings.Repeat(" ", 64<<10))
		for sent := int64(0); n < 0 || sent < n; {
			part := chunk
			if n >= 0 && n-sent < int64(len(part)) {
				part = part[:n-sent]
			}
			head := strconv.AppendInt(nil, int64(len(part)), 16)
			if _, err := c.Write(append(head, '\r', '\n')); err != nil {
				return
			}
			if _, err := c.Write(part); err != nil {
				return
			}
			if _, err := io.WriteString(c, "\r\n"); err != nil {
				return
			}
			sent += int64(len(part))
		}
		_, _ = io.WriteString(c, "0\r\n\r\n")
	}()
}

func TestLimits(t *testing.T) {
	e := newEnv(t, envOption{})
	const huge = 16<<20 + 1

	t.Run("H-01_declared_16MiB+1", func(t *testing.T) {
		c := dial(t, e.addr)
		_, _ = io.WriteString(c, postHead+"Content-Length: "+itoa(huge)+"\r\n\r\n{")
		resp, body := readResponse(t, c)
		wantRawProblem(t, resp, body, http.StatusRequestEntityTooLarge, CodeBodyTooLarge)
		if !resp.Close {
			t.Fatal("connection must be closed after 413")
		}
	})
	t.Run("H-01_streamed_16MiB+1_memory_bounded", func(t *testing.T) {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		c := dial(t, e.addr)
		_, _ = io.WriteString(c, postHead+"Transfer-Encoding: chunked\r\n\r\n")
		var wg sync.WaitGroup
		streamChunked(c, huge, &wg)
		resp, body := readResponse(t, c)
		c.Close()
		wg.Wait()
		runtime.ReadMemStats(&after)
		wantRawProblem(t, resp, body, http.StatusRequestEntityTooLarge, CodeBodyTooLarge)
		// The server reads at most MaxBodyBytes+1 (1 MiB): allocation over the
		// whole exchange stays far below the 16 MiB sent.
		alloc := after.TotalAlloc - before.TotalAlloc
		if alloc > 8<<20 {
			t.Fatalf("allocated %d bytes for a refused 16 MiB body", alloc)
		}
		t.Logf("allocated %d bytes in all for a refused 16 MiB body", alloc)
	})
	t.Run("H-02_lying_content_length", func(t *testing.T) {
		// Content-Length says 2; the rest is not body but a garbage next request.
		c := dial(t, e.addr)
		_, _ = io.WriteString(c, postHead+"Content-Length: 2\r\n\r\n"+validBody+"\r\n\r\n")
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		wantRawProblem(t, resp, string(b), http.StatusBadRequest, CodeMalformedJSON)
		if resp2, err := http.ReadResponse(br, nil); err == nil && resp2.StatusCode != http.StatusBadRequest {
			t.Fatalf("the extra bytes were served as a request: %d", resp2.StatusCode)
		}
	})
	t.Run("H-02_unbounded_chunked", func(t *testing.T) {
		c := dial(t, e.addr)
		_, _ = io.WriteString(c, postHead+"Transfer-Encoding: chunked\r\n\r\n")
		var wg sync.WaitGroup
		streamChunked(c, -1, &wg)
		resp, body := readResponse(t, c)
		c.Close()
		wg.Wait()
		wantRawProblem(t, resp, body, http.StatusRequestEntityTooLarge, CodeBodyTooLarge)
	})
	t.Run("H-06_headers_too_large", func(t *testing.T) {
		// net/http itself answers, in plain text, before any handler runs.
		resp, body := rawRoundTrip(t, e.addr, "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: "+strings.Repeat("a", 64<<10)+"\r\n\r\n")
		if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
			t.Fatalf("status %d, want 431: %s", resp.StatusCode, body)
		}
	})
	t.Run("headers_just_under_limit", func(t *testing.T) {
		r := e.do(t, http.MethodGet, "/healthz", "", "", "X-Big", strings.Repeat("a", 15<<10))
		if r.status != http.StatusOK {
			t.Fatalf("status %d", r.status)
		}
	})
	if n := len(e.be.submits()); n != 0 {
		t.Fatalf("%d oversized requests reached Submit", n)
	}
}

// TestTimeouts covers slow clients with short timeouts.
func TestTimeouts(t *testing.T) {
	const rht, rt = 300 * time.Millisecond, 600 * time.Millisecond
	e := newEnv(t, envOption{cfg: func(c *Config) { c.ReadHeaderTimeout, c.ReadTimeout, c.MaxConns = rht, rt, 3 }})

	t.Run("H-03_slowloris", func(t *testing.T) {
		c := dial(t, e.addr)
		start := time.Now()
		var wg sync.WaitGroup
		dribble(c, "POST /v1/messages HTTP/1.1\r\nHost: x\r\nX-Slow: "+strings.Repeat("a", 1000), &wg)
		closedWithin(t, c, start, rht, 3*time.Second)
		wg.Wait()
	})
	t.Run("H-03_connection_cap", func(t *testing.T) {
		// MaxConns slow connections hold every slot; a good client waits in
		// the accept queue and is served once ReadHeaderTimeout frees a slot.
		var wg sync.WaitGroup
		conns := make([]net.Conn, 3)
		for i := range conns {
			conns[i] = dial(t, e.addr)
			dribble(conns[i], "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: "+strings.Repeat("a", 1000), &wg)
		}
		start := time.Now()
		r := e.do(t, http.MethodGet, "/healthz", "", "")
		if r.status != 200 || time.Since(start) > 3*time.Second {
			t.Fatalf("good client: %d after %v", r.status, time.Since(start))
		}
		for _, c := range conns {
			c.Close()
		}
		wg.Wait()
	})
	t.Run("H-04_slow_body", func(t *testing.T) {
		c := dial(t, e.addr)
		start := time.Now()
		_, _ = io.WriteString(c, postHead+"Content-Length: 1000\r\n\r\n")
		var wg sync.WaitGroup
		dribble(c, strings.Repeat(" ", 1000), &wg)
		_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
		// The handler's body read fails at ReadTimeout; it answers 408 (the
		// write deadline is separate) and net/http closes the connection.
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("no answer: %v", err)
		}
		b, _ := io.ReadAll(resp.Body)
		wantRawProblem(t, resp, string(b), http.StatusRequestTimeout, CodeRequestTimeout)
		closedWithin(t, c, start, rt, 3*time.Second)
		wg.Wait()
		if len(e.be.submits()) != 0 {
			t.Fatal("a slow body reached Submit")
		}
	})
}

// dribble writes s one byte every 50 ms (the attack's pace) until done or
// the server hangs up.
func dribble(c net.Conn, s string, wg *sync.WaitGroup) {
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for i := range len(s) {
			<-tick.C
			if _, err := c.Write([]byte{s[i]}); err != nil {
				return
			}
		}
	}()
}

// closedWithin checks that the server closes c no earlier than lo and no
// later than hi after start.
func closedWithin(t *testing.T, c net.Conn, start time.Time, lo, hi time.Duration) {
	t.Helper()
	_ = c.SetReadDeadline(start.Add(hi))
	_, err := io.Copy(io.Discard, c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("connection still open after %v", hi)
	}
	if d := time.Since(start); d < lo {
		t.Fatalf("closed after %v, before the %v timeout", d, lo)
	}
	c.Close()
}

// TestSmuggling pins Go's framing of ambiguous requests (H-17). The reverse
// proxy in front must frame them the same way, or refuse them.
func TestSmuggling(t *testing.T) {
	e := newEnv(t, envOption{})
	chunked := fmt.Sprintf("%x\r\n%s\r\n0\r\n\r\n", len(validBody), validBody)
	tests := []struct {
		name   string
		head   string
		body   string
		status int
	}{
		// RFC 9112 §6.3: Transfer-Encoding overrides Content-Length. Go drops
		// the Content-Length and reads the chunked body (it does not answer 400).
		{name: "H-17_TE_and_CL_chunked_wins", head: "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n", body: chunked, status: 202},
		{name: "H-17_duplicate_TE", head: "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", body: chunked, status: 501},
		{name: "H-17_TE_list", head: "Transfer-Encoding: gzip, chunked\r\n", body: chunked, status: 501},
		{name: "H-17_TE_obfuscated_value", head: "Transfer-Encoding: xchunked\r\n", body: chunked, status: 501},
		{name: "H-17_TE_space_before_colon", head: "Transfer-Encoding : chunked\r\n", body: chunked, status: 400},
		{name: "H-17_two_content_lengths", head: "Content-Length: 3\r\nContent-Length: 4\r\n", body: "abcd", status: 400},
		// Go unfolds obs-fold into one space (RFC 9112 §5.2 allows it); a
		// folded Idempotency-Key then fails its character set.
		{name: "H-17_obs_fold", head: "Idempotency-Key: abc\r\n def\r\nContent-Length: " + itoa(len(validBody)) + "\r\n", body: validBody, status: 400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := rawRoundTrip(t, e.addr, postHead+tt.head+"\r\n"+tt.body)
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tt.status, body)
			}
		})
	}
	if n := len(e.be.submits()); n != 1 {
		t.Fatalf("%d requests reached Submit, want only the chunked one", n)
	}
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	return c
}

func wantRawProblem(t *testing.T, resp *http.Response, body string, status int, code string) {
	t.Helper()
	wantProblem(t, reply{status: resp.StatusCode, header: resp.Header, body: []byte(body)}, status, code)
}
