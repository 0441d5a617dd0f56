package ingress

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"regexp"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cmx-exchange/cmx/envelope"
	"github.com/cmx-exchange/cmx/gateway/api"
)

// Sentinels of IdemStore implementations.
var (
	ErrIdemExists   = errors.New("ingress: idempotency record exists")
	ErrIdemNotFound = errors.New("ingress: idempotency record not found")
	ErrIdemRevision = errors.New("ingress: idempotency record changed")
)

// IdemStore is the durable idempotency table: a key-value store with
// compare-and-set on revisions. Keys are "<agency>.<Idempotency-Key>", both
// of [A-Za-z0-9_-]. Records should expire (bucket TTL) no earlier than a
// client may retry, e.g. the outage budget.
type IdemStore interface {
	// Create stores value under key if the key holds nothing (or was
	// deleted); ErrIdemExists otherwise.
	Create(ctx context.Context, key string, value []byte) (rev uint64, err error)
	// Get returns the current value and revision; ErrIdemNotFound if none.
	Get(ctx context.Context, key string) (value []byte, rev uint64, err error)
	// Update replaces the value if its revision is still rev; ErrIdemRevision otherwise.
	Update(ctx context.Context, key string, value []byte, rev uint64) (uint64, error)
	// Delete removes the value if its revision is still rev; ErrIdemRevision otherwise.
	Delete(ctx context.Context, key string, rev uint64) error
}

// KVIdem adapts a JetStream key-value bucket to IdemStore.
type KVIdem struct {
	KV jetstream.KeyValue
}

var _ IdemStore = KVIdem{}

// Create implements IdemStore.
func (k KVIdem) Create(ctx context.Context, key string, value []byte) (uint64, error) {
	rev, err := k.KV.Create(ctx, key, value)
	if errors.Is(err, jetstream.ErrKeyExists) {
		return 0, fmt.Errorf("%w: %w", ErrIdemExists, err)
	}
	return rev, err
}

// Get implements IdemStore.
func (k KVIdem) Get(ctx context.Context, key string) ([]byte, uint64, error) {
	e, err := k.KV.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, 0, fmt.Errorf("%w: %w", ErrIdemNotFound, err)
	}
	if err != nil {
		return nil, 0, err
	}
	return e.Value(), e.Revision(), nil
}

// Update implements IdemStore.
func (k KVIdem) Update(ctx context.Context, key string, value []byte, rev uint64) (uint64, error) {
	n, err := k.KV.Update(ctx, key, value, rev)
	if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return 0, fmt.Errorf("%w: %w", ErrIdemRevision, err)
	}
	return n, err
}

// Delete implements IdemStore.
func (k KVIdem) Delete(ctx context.Context, key string, rev uint64) error {
	err := k.KV.Delete(ctx, key, jetstream.LastRevision(rev))
	if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return fmt.Errorf("%w: %w", ErrIdemRevision, err)
	}
	return err
}

// States of an idempotency record.
const (
	idemInFlight = "inflight" // a submission is running (or its gateway crashed)
	idemDone     = "done"     // durable; Response is the 202 body
	idemFailed   = "failed"   // the outcome is unknown (503/500): a retry resubmits the same id at once
)

type idemRecord struct {
	BodySHA256 string          `json:"body_sha256"` // of the raw request bytes
	ID         string          `json:"id"`
	State      string          `json:"state"`
	Response   json.RawMessage `json:"response,omitempty"`
	Created    time.Time       `json:"created"`
	Started    time.Time       `json:"started"` // of the current attempt
}

// claim is this request's hold on an idempotency key.
type claim struct {
	key    string
	rev    uint64
	rec    idemRecord
	replay bool // rec.State is done: answer rec.Response, submit nothing
}

var idemKeyRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// idempotencyKey returns the request's Idempotency-Key, "" if absent.
func idempotencyKey(r *http.Request) (string, error) {
	vals := r.Header.Values("Idempotency-Key")
	switch {
	case len(vals) == 0:
		return "", nil
	case len(vals) > 1 || !idemKeyRE.MatchString(vals[0]):
		return "", problem(http.StatusBadRequest, CodeInvalidIdempotencyKey,
			"Idempotency-Key must be one header of 1..64 characters of [A-Za-z0-9_-]")
	}
	return vals[0], nil
}

// claimKey reserves key for a submission of the body with digest sum. It
// returns a fresh record, a done record to replay, a taken-over record (stale
// in-flight or failed: same message id), or a problem (409, 422, 503).
func (s *Server) claimKey(ctx context.Context, key, sum string) (*claim, error) {
	for range 3 {
		now := s.now()
		c := &claim{key: key, rec: idemRecord{BodySHA256: sum, ID: envelope.NewID(), State: idemInFlight, Created: now, Started: now}}
		var err error
		c.rev, err = s.idem.Create(ctx, key, mustJSON(c.rec))
		if err == nil {
			return c, nil
		}
		if !errors.Is(err, ErrIdemExists) {
			return nil, idemUnavailable(err)
		}
		val, rev, err := s.idem.Get(ctx, key)
		if errors.Is(err, ErrIdemNotFound) {
			continue // deleted after a failed attempt: try to create again
		}
		if err != nil {
			return nil, idemUnavailable(err)
		}
		c.rev = rev
		if err := json.Unmarshal(val, &c.rec); err != nil {
			return nil, fmt.Errorf("ingress: idempotency record %s: %w", key, err)
		}
		return s.resume(ctx, c, sum, now)
	}
	return nil, inFlight()
}

// resume decides what to do with an existing record.
func (s *Server) resume(ctx context.Context, c *claim, sum string, now time.Time) (*claim, error) {
	switch {
	case c.rec.BodySHA256 != sum:
		return nil, problem(http.StatusUnprocessableEntity, CodeIdempotencyConflict,
			"this Idempotency-Key was used with a different request body")
	case c.rec.State == idemDone:
		c.replay = true
		return c, nil
	case c.rec.State == idemInFlight && now.Sub(c.rec.Started) < s.cfg.IdemInFlightTimeout:
		return nil, inFlight()
	}
	// Stale in-flight (its gateway died) or failed: take over with the same
	// message id, so the outbox's Nats-Msg-Id dedup keeps a single entry.
	c.rec.State, c.rec.Started = idemInFlight, now
	rev, err := s.idem.Update(ctx, c.key, mustJSON(c.rec), c.rev)
	if errors.Is(err, ErrIdemRevision) {
		return nil, inFlight() // another retry took it over first
	}
	if err != nil {
		return nil, idemUnavailable(err)
	}
	c.rev = rev
	s.log.InfoContext(ctx, "idempotency record taken over", slog.String("msg_id", c.rec.ID))
	return c, nil
}

// settle records the outcome of Submit. A durable message is answered 202
// even if this fails: a retry then takes the record over with the same id.
func (s *Server) settle(ctx context.Context, c *claim, resp []byte, subErr error) {
	var err error
	switch {
	case subErr == nil:
		c.rec.State, c.rec.Response = idemDone, resp
		_, err = s.idem.Update(ctx, c.key, mustJSON(c.rec), c.rev)
	case outcomeUnknown(subErr):
		c.rec.State = idemFailed
		_, err = s.idem.Update(ctx, c.key, mustJSON(c.rec), c.rev)
	default: // refused before anything was published: free the key
		err = s.idem.Delete(ctx, c.key, c.rev)
	}
	if err != nil {
		s.log.WarnContext(ctx, "idempotency record not settled",
			slog.String("msg_id", c.rec.ID), slog.Any("error", err))
	}
}

// outcomeUnknown reports whether a Submit error leaves open whether the
// message became durable (timeouts, unavailability, internal errors).
func outcomeUnknown(err error) bool {
	switch api.KindOf(err) {
	case api.KindInvalid, api.KindUnprocessable, api.KindForbidden, api.KindNotFound, api.KindConflict:
		return false
	}
	return true
}

func inFlight() *problemErr {
	return &problemErr{status: http.StatusConflict, code: CodeIdempotencyInFlight,
		detail: "a request with this Idempotency-Key is still being processed", retryAfter: 1}
}

func idemUnavailable(err error) *problemErr {
	return &problemErr{status: http.StatusServiceUnavailable, code: CodeUnavailable,
		detail: "the idempotency table is unavailable", retryAfter: 1, err: err}
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("ingress: marshal %T: %v", v, err)) // only plain structs are marshalled
	}
	return b
}
