package transport

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// ErrLayout is matched (errors.Is) by every LayoutError.
var ErrLayout = errors.New("transport: layout does not match the contract")

// LayoutError names one stream or bucket that is missing or differs from
// the contract.
type LayoutError struct {
	Name    string // stream or bucket name
	Problem string // e.g. "missing", "discard is DiscardOld, want DiscardNew"
}

func (e *LayoutError) Error() string {
	return "transport: layout: " + e.Name + ": " + e.Problem
}

// Is makes errors.Is(err, ErrLayout) true.
func (e *LayoutError) Is(target error) bool { return target == ErrLayout }

// streamConfigs returns the contract streams of cfg (defaults applied).
func streamConfigs(cfg LayoutConfig) []jetstream.StreamConfig {
	self, peer := token(cfg.Party), token(cfg.Peer)
	return []jetstream.StreamConfig{{
		Name:               StreamOut,
		Description:        "cmx outbox towards " + peer,
		Subjects:           []string{outPrefix + peer + ".>"},
		Retention:          jetstream.LimitsPolicy,
		Storage:            jetstream.FileStorage,
		MaxAge:             cfg.OutageBudget,
		MaxBytes:           cfg.MaxOutBytes,
		MaxMsgSize:         cfg.MaxMsgSize,
		Discard:            jetstream.DiscardNew, // full outbox = ingress back-pressure, never silent loss
		DenyDelete:         true,
		DenyPurge:          true,
		Duplicates:         cfg.DuplicateWindow,
		Replicas:           cfg.Replicas,
		AllowAtomicPublish: true, // allowed for group commit (DESIGN §9); the gateway does not batch yet
	}, {
		Name:               StreamIn,
		Description:        "cmx inbound from " + peer,
		Subjects:           []string{xPrefix + peer + "." + self + ".>"},
		Retention:          jetstream.LimitsPolicy,
		Storage:            jetstream.FileStorage,
		MaxAge:             cfg.OutageBudget,
		MaxBytes:           cfg.MaxInBytes,
		MaxMsgSize:         cfg.MaxMsgSize,
		Discard:            jetstream.DiscardNew, // a flooding peer is refused, not allowed to evict (N-08)
		DenyDelete:         true,
		DenyPurge:          true,
		Duplicates:         cfg.DuplicateWindow, // forwarder retries; the application dedups beyond (N-02, N-07)
		Replicas:           cfg.Replicas,
		AllowAtomicPublish: true, // allowed for batched forwarding; the forwarder publishes one by one yet
	}, {
		Name:               StreamAudit,
		Description:        "cmx audit log leaves",
		Subjects:           []string{auditSubjects},
		Retention:          jetstream.LimitsPolicy,
		Storage:            jetstream.FileStorage,
		Discard:            jetstream.DiscardNew, // evidence is never evicted to make room
		DenyDelete:         true,
		DenyPurge:          true,
		Duplicates:         cfg.DuplicateWindow,
		Replicas:           cfg.Replicas,
		AllowAtomicPublish: true,
	}}
}

// bucketConfigs returns the contract KV buckets of cfg (defaults applied).
func bucketConfigs(cfg LayoutConfig) []jetstream.KeyValueConfig {
	kv := func(name string, ttl time.Duration) jetstream.KeyValueConfig {
		return jetstream.KeyValueConfig{
			Bucket:   name,
			History:  1,
			TTL:      ttl,
			Storage:  jetstream.FileStorage,
			Replicas: cfg.Replicas,
		}
	}
	return []jetstream.KeyValueConfig{
		kv(BucketStatus, 0),
		kv(BucketSeen, 0), // evidence: our receipts live in the claim records
		kv(BucketIdem, IdemTTL),
		kv(BucketReceipts, 0),
		kv(BucketInbox, 0),
	}
}

// EnsureLayout creates or updates the streams and KV buckets of cfg. It is
// idempotent. An existing stream that cannot be updated to the contract
// (e.g. memory storage) is an error: fix it by hand, never by purging.
func EnsureLayout(ctx context.Context, js jetstream.JetStream, cfg LayoutConfig) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	cfg = cfg.withDefaults()
	for _, sc := range streamConfigs(cfg) {
		if _, err := js.CreateOrUpdateStream(ctx, sc); err != nil {
			return fmt.Errorf("transport: ensure stream %s: %w", sc.Name, err)
		}
	}
	for _, kc := range bucketConfigs(cfg) {
		if _, err := js.CreateOrUpdateKeyValue(ctx, kc); err != nil {
			return fmt.Errorf("transport: ensure bucket %s: %w", kc.Bucket, err)
		}
	}
	return nil
}

// CheckLayout is the readiness check: every stream and bucket exists with
// the settings EnsureLayout(cfg) gives it. Differences come back joined, one
// *LayoutError each (errors.Is(err, ErrLayout)); a failure to ask the server
// is returned as is.
func CheckLayout(ctx context.Context, js jetstream.JetStream, cfg LayoutConfig) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	cfg = cfg.withDefaults()
	var errs []error
	for _, want := range streamConfigs(cfg) {
		got, err := streamConfig(ctx, js, want.Name)
		if err != nil {
			return err
		}
		errs = append(errs, layoutErrors(want.Name, got, diffStream(want, got))...)
	}
	for _, kc := range bucketConfigs(cfg) {
		got, err := streamConfig(ctx, js, "KV_"+kc.Bucket)
		if err != nil {
			return err
		}
		errs = append(errs, layoutErrors(kc.Bucket, got, diffBucket(kc, got))...)
	}
	return errors.Join(errs...)
}

// streamConfig fetches a stream's configuration; nil if it does not exist.
func streamConfig(ctx context.Context, js jetstream.JetStream, name string) (*jetstream.StreamConfig, error) {
	s, err := js.Stream(ctx, name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("transport: stream info %s: %w", name, err)
	}
	sc := s.CachedInfo().Config
	return &sc, nil
}

func layoutErrors(name string, got *jetstream.StreamConfig, problems []string) []error {
	if got == nil {
		return []error{&LayoutError{Name: name, Problem: "missing"}}
	}
	errs := make([]error, len(problems))
	for i, p := range problems {
		errs[i] = &LayoutError{Name: name, Problem: p}
	}
	return errs
}

// differ collects "field is X, want Y" problems.
type differ []string

func (d *differ) check(field string, got, want any) {
	if got != want {
		*d = append(*d, fmt.Sprintf("%s is %v, want %v", field, got, want))
	}
}

func diffStream(want jetstream.StreamConfig, got *jetstream.StreamConfig) []string {
	if got == nil {
		return nil
	}
	var d differ
	if !sameSet(got.Subjects, want.Subjects) {
		d = append(d, fmt.Sprintf("subjects are %q, want %q", got.Subjects, want.Subjects))
	}
	d.check("storage", got.Storage, want.Storage)
	d.check("retention", got.Retention, want.Retention)
	d.check("discard", got.Discard, want.Discard)
	d.check("deny_delete", got.DenyDelete, want.DenyDelete)
	d.check("deny_purge", got.DenyPurge, want.DenyPurge)
	d.check("allow_rollup", got.AllowRollup, false)
	d.check("persist_mode", got.PersistMode, jetstream.DefaultPersistMode)
	d.check("max_age", got.MaxAge, want.MaxAge)
	d.check("max_bytes", got.MaxBytes, orUnlimited(want.MaxBytes))
	d.check("max_msg_size", got.MaxMsgSize, int32(orUnlimited(int64(want.MaxMsgSize))))
	d.check("duplicate_window", got.Duplicates, want.Duplicates)
	d.check("replicas", got.Replicas, want.Replicas)
	d.check("allow_atomic", got.AllowAtomicPublish, want.AllowAtomicPublish)
	d.check("mirror", got.Mirror == nil, true)
	d.check("sources", len(got.Sources), 0)
	return d
}

func diffBucket(want jetstream.KeyValueConfig, got *jetstream.StreamConfig) []string {
	if got == nil {
		return nil
	}
	var d differ
	d.check("storage", got.Storage, want.Storage)
	d.check("ttl", got.MaxAge, want.TTL)
	d.check("history", got.MaxMsgsPerSubject, int64(want.History))
	d.check("replicas", got.Replicas, want.Replicas)
	d.check("persist_mode", got.PersistMode, jetstream.DefaultPersistMode)
	return d
}

// orUnlimited maps the "not set" zero to the server's -1.
func orUnlimited(v int64) int64 {
	if v == 0 {
		return -1
	}
	return v
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}
