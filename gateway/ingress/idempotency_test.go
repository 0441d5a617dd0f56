package ingress

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/cmx-exchange/cmx/gateway/api"
)

func bodySum(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// record reads the idempotency record of agency and key from the KV bucket.
func (e *env) record(t *testing.T, agency, key string) idemRecord {
	t.Helper()
	v, _, err := KVIdem{KV: e.kv}.Get(context.Background(), agency+"."+key)
	if err != nil {
		t.Fatalf("record %s.%s: %v", agency, key, err)
	}
	var rec idemRecord
	if err := json.Unmarshal(v, &rec); err != nil {
		t.Fatal(err)
	}
	return rec
}

// blockSubmit makes Submit signal entered and wait for release.
func blockSubmit(e *env) (entered chan struct{}, release chan struct{}) {
	entered, release = make(chan struct{}, 8), make(chan struct{})
	e.be.setSubmit(func(context.Context, string, string) error {
		entered <- struct{}{}
		<-release
		return nil
	})
	return entered, release
}

func TestIdempotency(t *testing.T) {
	const nmp = `{"type":"non_market_practice_report","to":"JP","body":{"country":"X"}}`
	e := newEnv(t, envOption{})

	t.Run("H-11a_same_key_same_body_done", func(t *testing.T) {
		r1 := e.submit(t, tokDOL, validBody, "Idempotency-Key", "a-1")
		id := wantAccepted(t, r1)
		r2 := e.submit(t, tokDOL, validBody, "Idempotency-Key", "a-1")
		if wantAccepted(t, r2) != id || string(r2.body) != string(r1.body) || r2.header.Get("Idempotent-Replayed") != "true" {
			t.Fatalf("replay %s %v, want the original %s", r2.body, r2.header, r1.body)
		}
		if n := len(e.be.submits()); n != 1 {
			t.Fatalf("%d submissions, want 1", n)
		}
		if rec := e.record(t, "DOL-ILAB", "a-1"); rec.State != idemDone || rec.ID != id || rec.BodySHA256 != bodySum(validBody) {
			t.Fatalf("record %+v", rec)
		}
	})
	t.Run("H-11b_same_key_in_flight", func(t *testing.T) {
		entered, release := blockSubmit(e)
		defer e.be.setSubmit(nil)
		first := make(chan reply, 1)
		go func() { first <- e.submit(noFatal{t}, tokDOL, validBody, "Idempotency-Key", "b-1") }()
		<-entered
		r := e.submit(t, tokDOL, validBody, "Idempotency-Key", "b-1")
		wantProblem(t, r, http.StatusConflict, CodeIdempotencyInFlight)
		if r.header.Get("Retry-After") != "1" {
			t.Fatalf("Retry-After %q", r.header.Get("Retry-After"))
		}
		close(release)
		id := wantAccepted(t, <-first)
		if got := wantAccepted(t, e.submit(t, tokDOL, validBody, "Idempotency-Key", "b-1")); got != id {
			t.Fatalf("after completion: id %s, want %s", got, id)
		}
	})
	t.Run("H-11c_same_key_different_body", func(t *testing.T) {
		wantAccepted(t, e.submit(t, tokDOL, validBody, "Idempotency-Key", "c-1"))
		n := len(e.be.submits())
		for _, other := range []string{nmp, validBody + " "} { // other bytes, even if only whitespace
			wantProblem(t, e.submit(t, tokDOL, other, "Idempotency-Key", "c-1"), http.StatusUnprocessableEntity, CodeIdempotencyConflict)
		}
		if len(e.be.submits()) != n {
			t.Fatal("a conflicting request reached Submit")
		}
	})
	t.Run("H-11_key_scoped_per_agency", func(t *testing.T) {
		a := wantAccepted(t, e.submit(t, tokDOL, nmp, "Idempotency-Key", "shared"))
		b := wantAccepted(t, e.submit(t, tokUSTR, nmp, "Idempotency-Key", "shared"))
		if a == b {
			t.Fatal("two agencies' keys collided")
		}
	})
}

// TestIdempotencyRecovery covers retries after a crash or a failed Submit:
// they keep the message id, so the outbox holds one entry.
func TestIdempotencyRecovery(t *testing.T) {
	const nmp = `{"type":"non_market_practice_report","to":"JP","body":{"country":"X"}}`
	e := newEnv(t, envOption{})

	t.Run("H-11_in_flight_takeover_after_timeout", func(t *testing.T) {
		// A gateway crashed between claiming the key and settling it.
		const crashedID = "01890000-0000-7000-8000-00000000c4a5"
		now := e.clock.Now()
		_, err := KVIdem{KV: e.kv}.Create(context.Background(), "DOL-ILAB.crash-1", mustJSON(idemRecord{
			BodySHA256: bodySum(validBody), ID: crashedID, State: idemInFlight, Created: now, Started: now}))
		if err != nil {
			t.Fatal(err)
		}
		wantProblem(t, e.submit(t, tokDOL, validBody, "Idempotency-Key", "crash-1"), http.StatusConflict, CodeIdempotencyInFlight)
		e.clock.Advance(DefaultIdemInFlightTimeout + time.Second)
		if id := wantAccepted(t, e.submit(t, tokDOL, validBody, "Idempotency-Key", "crash-1")); id != crashedID {
			t.Fatalf("takeover id %s, want the original %s", id, crashedID)
		}
		calls := e.be.submits()
		if last := calls[len(calls)-1]; last.id != crashedID {
			t.Fatalf("resubmitted with id %s", last.id)
		}
		if rec := e.record(t, "DOL-ILAB", "crash-1"); rec.State != idemDone || rec.ID != crashedID {
			t.Fatalf("record %+v", rec)
		}
	})
	t.Run("H-16_unavailable_then_retry_same_id", func(t *testing.T) {
		e.be.setSubmit(func(context.Context, string, string) error {
			return &api.Error{Kind: api.KindUnavailable, Code: "puback-timeout"}
		})
		r := e.submit(t, tokDOL, validBody, "Idempotency-Key", "u-1")
		wantProblem(t, r, http.StatusServiceUnavailable, "puback-timeout")
		if r.header.Get("Retry-After") != "1" {
			t.Fatal("503 without Retry-After")
		}
		first := e.be.submits()
		firstID := first[len(first)-1].id
		if rec := e.record(t, "DOL-ILAB", "u-1"); rec.State != idemFailed || rec.ID != firstID {
			t.Fatalf("record %+v", rec)
		}
		e.be.setSubmit(nil)
		if id := wantAccepted(t, e.submit(t, tokDOL, validBody, "Idempotency-Key", "u-1")); id != firstID {
			t.Fatalf("retry id %s, want %s (one outbox entry via Nats-Msg-Id)", id, firstID)
		}
	})
	t.Run("refused_frees_the_key", func(t *testing.T) {
		e.be.setSubmit(func(context.Context, string, string) error {
			return &api.Error{Kind: api.KindUnprocessable, Code: "schema-invalid", Field: "body"}
		})
		wantProblem(t, e.submit(t, tokDOL, validBody, "Idempotency-Key", "s-1"), http.StatusUnprocessableEntity, "schema-invalid")
		e.be.setSubmit(nil)
		if _, _, err := (KVIdem{KV: e.kv}).Get(context.Background(), "DOL-ILAB.s-1"); !errors.Is(err, ErrIdemNotFound) {
			t.Fatalf("record after a refusal: %v", err)
		}
		wantAccepted(t, e.submit(t, tokDOL, nmp, "Idempotency-Key", "s-1")) // corrected body, same key
	})
}

// TestClientDisconnect covers H-19: the client goes away while Submit runs;
// the submission completes anyway and a retry gets the same id.
func TestClientDisconnect(t *testing.T) {
	e := newEnv(t, envOption{})
	entered, release := blockSubmit(e)
	c := dial(t, e.addr)
	_, _ = io.WriteString(c, postHead+"Idempotency-Key: h19\r\nContent-Length: "+itoa(len(validBody))+"\r\n\r\n"+validBody)
	<-entered
	c.Close()
	// A window in which an implementation that ties Submit to the client's
	// connection would see its context cancelled (not a synchronisation).
	time.AfterFunc(200*time.Millisecond, func() { close(release) })
	var r reply
	waitFor(t, "the first submission to settle", 5*time.Second, func() bool {
		r = e.submit(t, tokDOL, validBody, "Idempotency-Key", "h19")
		return r.status != http.StatusConflict
	})
	id := wantAccepted(t, r)
	calls := e.be.submits()
	if len(calls) != 1 || calls[0].id != id || calls[0].ctxErr != nil {
		t.Fatalf("submissions %+v, want one with id %s and a live context", calls, id)
	}
	if r.header.Get("Idempotent-Replayed") != "true" {
		t.Fatal("the retry must be the stored answer")
	}
}

// noFatal lets a helper run off the test goroutine: Fatal becomes Error and
// the helper carries on with a zero reply.
type noFatal struct{ *testing.T }

func (n noFatal) Fatal(args ...any)                 { n.Error(args...) }
func (n noFatal) Fatalf(format string, args ...any) { n.Errorf(format, args...) }
