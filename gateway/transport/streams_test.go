package transport_test

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cmx-exchange/cmx/gateway/transport"
	"github.com/cmx-exchange/cmx/gateway/transport/transporttest"
)

// layoutProblems flattens a CheckLayout error into "name: problem" strings.
func layoutProblems(t *testing.T, err error) []string {
	t.Helper()
	var out []string
	var walk func(error)
	walk = func(err error) {
		var le *transport.LayoutError
		switch e := err.(type) {
		case interface{ Unwrap() []error }:
			for _, inner := range e.Unwrap() {
				walk(inner)
			}
		default:
			if !errors.As(err, &le) {
				t.Fatalf("not a LayoutError: %v", err)
			}
			out = append(out, le.Name+": "+le.Problem)
		}
	}
	if err != nil {
		walk(err)
	}
	return out
}

func TestLayout(t *testing.T) {
	e, cfg := single(t, nil)
	js := connectSingle(t, e, cfg)
	layout := transporttest.Layout("US")
	// In order: each step starts from the state the previous one left.
	t.Run("missing", func(t *testing.T) { testLayoutMissing(t, js, layout) })
	t.Run("wrong_settings", func(t *testing.T) { testLayoutWrongSettings(t, js, layout) })
	t.Run("ensure_fixes_and_is_idempotent", func(t *testing.T) { testLayoutEnsure(t, js, layout) })
	t.Run("contract_values", func(t *testing.T) { testLayoutValues(t, js, layout) })
	t.Run("budget_changed", func(t *testing.T) { testLayoutBudgetChanged(t, js, layout) })
	t.Run("deny_purge_holds", func(t *testing.T) { testLayoutDenyPurge(t, js, layout) })
	t.Run("invalid_config", func(t *testing.T) { testLayoutInvalidConfig(t, js, layout) })
}

func testLayoutMissing(t *testing.T, js jetstream.JetStream, layout transport.LayoutConfig) {
	err := transport.CheckLayout(testCtx(t), js, layout)
	if !errors.Is(err, transport.ErrLayout) {
		t.Fatalf("CheckLayout on an empty server = %v", err)
	}
	want := []string{"CMX_OUT: missing", "CMX_IN: missing", "CMX_AUDIT: missing", "cmx_status: missing",
		"cmx_seen: missing", "cmx_idem: missing", "cmx_receipts: missing", "cmx_inbox: missing"}
	if got := layoutProblems(t, err); !slices.Equal(got, want) {
		t.Fatalf("problems = %q, want %q", got, want)
	}
}

func testLayoutWrongSettings(t *testing.T, js jetstream.JetStream, layout transport.LayoutConfig) {
	// An outbox that evicts the oldest messages when full would lose
	// accepted messages silently.
	_, err := js.CreateStream(testCtx(t), jetstream.StreamConfig{
		Name: transport.StreamOut, Subjects: []string{"cmx.out.jp.>"},
		Storage: jetstream.FileStorage, Discard: jetstream.DiscardOld,
	})
	if err != nil {
		t.Fatal(err)
	}
	problems := layoutProblems(t, transport.CheckLayout(testCtx(t), js, layout))
	for _, want := range []string{
		"CMX_OUT: discard is DiscardOld, want DiscardNew",
		"CMX_OUT: deny_delete is false, want true",
		"CMX_OUT: deny_purge is false, want true",
		"CMX_IN: missing",
	} {
		if !slices.Contains(problems, want) {
			t.Errorf("missing problem %q in %q", want, problems)
		}
	}
}

func testLayoutEnsure(t *testing.T, js jetstream.JetStream, layout transport.LayoutConfig) {
	for i := range 2 {
		if err := transport.EnsureLayout(testCtx(t), js, layout); err != nil {
			t.Fatalf("EnsureLayout #%d: %v", i+1, err)
		}
		if err := transport.CheckLayout(testCtx(t), js, layout); err != nil {
			t.Fatalf("CheckLayout after EnsureLayout #%d: %v", i+1, err)
		}
	}
	names := js.StreamNames(testCtx(t))
	var got []string
	for n := range names.Name() {
		got = append(got, n)
	}
	slices.Sort(got)
	want := []string{"CMX_AUDIT", "CMX_IN", "CMX_OUT", "KV_cmx_idem", "KV_cmx_inbox", "KV_cmx_receipts", "KV_cmx_seen", "KV_cmx_status"}
	if !slices.Equal(got, want) {
		t.Fatalf("streams = %q, want %q", got, want)
	}
}

func testLayoutValues(t *testing.T, js jetstream.JetStream, layout transport.LayoutConfig) {
	s, err := js.Stream(testCtx(t), transport.StreamIn)
	if err != nil {
		t.Fatal(err)
	}
	c := s.CachedInfo().Config
	if c.MaxAge != transport.DefaultOutageBudget || c.Duplicates != transport.DefaultDuplicateWindow ||
		!slices.Equal(c.Subjects, []string{"cmx.x.jp.us.>"}) || c.Discard != jetstream.DiscardNew {
		t.Fatalf("CMX_IN config = %+v", c)
	}
	kv, err := js.KeyValue(testCtx(t), transport.BucketSeen)
	if err != nil {
		t.Fatal(err)
	}
	st, err := kv.Status(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	if st.TTL() != 0 || st.BackingStore() != "JetStream" { // our receipts are in the records: evidence, kept forever
		t.Fatalf("cmx_seen TTL = %v, want none", st.TTL())
	}
}

func testLayoutBudgetChanged(t *testing.T, js jetstream.JetStream, layout transport.LayoutConfig) {
	shorter := layout
	shorter.OutageBudget = 3 * 24 * time.Hour
	problems := layoutProblems(t, transport.CheckLayout(testCtx(t), js, shorter))
	if !slices.Equal(problems, []string{"CMX_OUT: max_age is 168h0m0s, want 72h0m0s", "CMX_IN: max_age is 168h0m0s, want 72h0m0s"}) {
		t.Fatalf("problems = %q", problems)
	}
}

func testLayoutDenyPurge(t *testing.T, js jetstream.JetStream, layout transport.LayoutConfig) {
	s, err := js.Stream(testCtx(t), transport.StreamOut)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Purge(testCtx(t)); err == nil {
		t.Fatal("purge of CMX_OUT allowed")
	}
	if _, err := js.Publish(testCtx(t), transport.OutRcptSubject("JP"), []byte("r")); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteMsg(testCtx(t), 1); err == nil {
		t.Fatal("message delete on CMX_OUT allowed")
	}
}

func testLayoutInvalidConfig(t *testing.T, js jetstream.JetStream, layout transport.LayoutConfig) {
	for _, c := range []transport.LayoutConfig{
		{Party: "US", Peer: "us"},
		{Party: "USA", Peer: "JP"},
		{Party: "US", Peer: "JP", DuplicateWindow: 8 * 24 * time.Hour},
		{Party: "US", Peer: "JP", Replicas: 7},
	} {
		if err := transport.EnsureLayout(testCtx(t), js, c); err == nil || errors.Is(err, transport.ErrLayout) {
			t.Errorf("EnsureLayout(%+v) = %v, want a validation error", c, err)
		}
	}
}

func TestLayoutErrorMessage(t *testing.T) {
	err := &transport.LayoutError{Name: "CMX_OUT", Problem: "missing"}
	if !errors.Is(err, transport.ErrLayout) || !strings.Contains(err.Error(), "CMX_OUT: missing") {
		t.Fatalf("%v", err)
	}
}
