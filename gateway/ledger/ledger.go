package ledger

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cmx-exchange/cmx/gateway/api"
)

var (
	// ErrNotFound means the ledger holds no record under that key.
	ErrNotFound = errors.New("ledger: not found")
	// ErrExists means Create lost the race: a record is already there.
	ErrExists = errors.New("ledger: already exists")
)

// maxCASRetries bounds the compare-and-swap loop of Update; contention on one
// message is rare (a few events per message), so hitting it means a bug.
const maxCASRetries = 16

// Store is one KV bucket of records.
type Store struct {
	kv     jetstream.KeyValue
	prefix string
	// OnEvent, if set, is called once for every event that a successful
	// write added to a record (metrics hook). Set it before use.
	OnEvent func(ctx context.Context, r *Record, e api.Event)
}

// Sent returns the store of outbound records (bucket cmx_status).
func Sent(kv jetstream.KeyValue) *Store { return &Store{kv: kv, prefix: "out."} }

// Seen returns the store of inbound claims (bucket cmx_seen); ids there are
// qualified by the issuing party.
func Seen(kv jetstream.KeyValue) *Store { return &Store{kv: kv} }

// SeenKey is the cmx_seen key of a message from party iss.
func SeenKey(iss, id string) string { return iss + "." + id }

func (s *Store) key(id string) string { return s.prefix + id }

// Create stores r under id if nothing is there yet. It returns ErrExists
// (and the existing record) when the key is taken: that is the atomic
// dedup claim.
func (s *Store) Create(ctx context.Context, id string, r *Record) (*Record, error) {
	b, err := json.Marshal(r)
	if err != nil {
		return nil, err
	}
	rev, err := s.kv.Create(ctx, s.key(id), b)
	if err == nil {
		r.rev = rev
		s.notify(ctx, r, nil)
		return r, nil
	}
	if !errors.Is(err, jetstream.ErrKeyExists) {
		return nil, fmt.Errorf("ledger: create %s: %w", id, err)
	}
	existing, _, gerr := s.Get(ctx, id)
	if gerr != nil {
		return nil, gerr
	}
	return existing, ErrExists
}

// Get returns the record under id and its revision.
func (s *Store) Get(ctx context.Context, id string) (*Record, uint64, error) {
	e, err := s.kv.Get(ctx, s.key(id))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, 0, ErrNotFound
	}
	if err != nil {
		return nil, 0, fmt.Errorf("ledger: get %s: %w", id, err)
	}
	var r Record
	if err := json.Unmarshal(e.Value(), &r); err != nil {
		return nil, 0, fmt.Errorf("ledger: decode %s: %w", id, err)
	}
	r.rev = e.Revision()
	return &r, e.Revision(), nil
}

// Update applies fn to the record under id and stores the result with
// compare-and-swap, retrying on conflicting writes. fn reports whether it
// changed anything; nothing is written when it did not.
func (s *Store) Update(ctx context.Context, id string, fn func(*Record) bool) (*Record, error) {
	for range maxCASRetries {
		r, rev, err := s.Get(ctx, id)
		if err != nil {
			return nil, err
		}
		before := statuses(r)
		if !fn(r) {
			return r, nil
		}
		b, err := json.Marshal(r)
		if err != nil {
			return nil, err
		}
		if r.rev, err = s.kv.Update(ctx, s.key(id), b, rev); err == nil {
			s.notify(ctx, r, before)
			return r, nil
		}
		if !isWrongRevision(err) {
			return nil, fmt.Errorf("ledger: update %s: %w", id, err)
		}
	}
	return nil, fmt.Errorf("ledger: update %s: too much contention", id)
}

// UpdateFrom is Update starting from a record this process read or wrote
// last (its revision travels with it), which saves the read when nobody
// else wrote in between; on a conflict it falls back to Update. cached is
// not modified.
func (s *Store) UpdateFrom(ctx context.Context, id string, cached *Record, fn func(*Record) bool) (*Record, error) {
	if cached == nil || cached.rev == 0 {
		return s.Update(ctx, id, fn)
	}
	r := cached.clone()
	before := statuses(r)
	if !fn(r) {
		return r, nil
	}
	b, err := json.Marshal(r)
	if err != nil {
		return nil, err
	}
	if r.rev, err = s.kv.Update(ctx, s.key(id), b, cached.rev); err == nil {
		s.notify(ctx, r, before)
		return r, nil
	}
	if !isWrongRevision(err) {
		return nil, fmt.Errorf("ledger: update %s: %w", id, err)
	}
	return s.Update(ctx, id, fn)
}

// AddReceipt stores token as the record's receipt for status together with
// the event it attests, in one write (UpdateFrom cached; nil means read
// first). It returns the record and the bytes it holds for status: token,
// or the ones stored first (PutReceipt).
func (s *Store) AddReceipt(ctx context.Context, id string, cached *Record, status string, token []byte, e api.Event) (*Record, []byte, error) {
	var stored string
	r, err := s.UpdateFrom(ctx, id, cached, func(r *Record) bool {
		var changed bool
		stored, changed = r.PutReceipt(status, token)
		return r.AddEvent(e) || changed
	})
	if err != nil {
		return nil, nil, err
	}
	return r, []byte(stored), nil
}

func statuses(r *Record) map[string]bool {
	m := make(map[string]bool, len(r.Timeline))
	for _, e := range r.Timeline {
		m[e.Status] = true
	}
	return m
}

// notify reports the events of r that were not in before.
func (s *Store) notify(ctx context.Context, r *Record, before map[string]bool) {
	if s.OnEvent == nil {
		return
	}
	for _, e := range r.Timeline {
		if !before[e.Status] {
			s.OnEvent(ctx, r, e)
		}
	}
}

func isWrongRevision(err error) bool {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence {
		return true
	}
	return errors.Is(err, jetstream.ErrKeyExists)
}
