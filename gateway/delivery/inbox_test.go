package delivery_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cmx-exchange/cmx/gateway/api"
	"github.com/cmx-exchange/cmx/gateway/delivery"
)

// natsNode is an embedded nats-server with JetStream on a store directory
// and one client connection.
type natsNode struct {
	srv *server.Server
	nc  *nats.Conn
	js  jetstream.JetStream
}

func startNATS(t testing.TB, storeDir string) *natsNode {
	t.Helper()
	s, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: storeDir,
		SyncAlways: true, NoLog: true, NoSigs: true,
	})
	if err != nil {
		t.Fatalf("nats-server: %v", err)
	}
	s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	nc, err := nats.Connect(s.ClientURL())
	if err != nil {
		s.Shutdown()
		t.Fatalf("connect: %v", err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("jetstream: %v", err)
	}
	n := &natsNode{srv: s, nc: nc, js: js}
	t.Cleanup(n.stop)
	return n
}

func (n *natsNode) stop() {
	n.nc.Close()
	n.srv.Shutdown()
	n.srv.WaitForShutdown()
}

func inboxBucket(t testing.TB, n *natsNode) jetstream.KeyValue {
	t.Helper()
	kv, err := n.js.CreateKeyValue(context.Background(), jetstream.KeyValueConfig{
		Bucket: "cmx_inbox", History: 1, Storage: jetstream.FileStorage,
	})
	if err != nil {
		t.Fatalf("create bucket: %v", err)
	}
	return kv
}

func newInbox(t testing.TB) *delivery.Inbox {
	t.Helper()
	return delivery.NewInbox(inboxBucket(t, startNATS(t, t.TempDir())))
}

func ids(ds []api.Delivery) []string {
	out := make([]string, len(ds))
	for i, d := range ds {
		out[i] = d.ID
	}
	return out
}

func TestInboxPutIdempotent(t *testing.T) {
	ctx := context.Background()
	in := newInbox(t)
	d := sample(newID(t))
	for i := range 2 {
		if err := in.Put(ctx, "MHLW", d); err != nil {
			t.Fatalf("Put #%d: %v", i+1, err)
		}
	}
	got, err := in.List(ctx, "MHLW", 0)
	if err != nil || len(got) != 1 {
		t.Fatalf("List = %v, %v; want one entry", ids(got), err)
	}
	other := *d
	other.Body = json.RawMessage(`{"entity":"Someone Else"}`)
	err = in.Put(ctx, "MHLW", &other)
	if !errors.Is(err, delivery.ErrInboxConflict) || api.KindOf(err) != api.KindConflict {
		t.Errorf("Put with other content = %v, want ErrInboxConflict", err)
	}
	back, err := in.Get(ctx, "MHLW", d.ID)
	if err != nil || string(back.Body) != string(d.Body) {
		t.Errorf("Get = %+v, %v; want the first content", back, err)
	}
}

func TestInboxListOrderAndLimit(t *testing.T) {
	ctx := context.Background()
	in := newInbox(t)
	var put []string
	for range 5 {
		put = append(put, newID(t))
	}
	// Put in reverse id order: List follows the order of Put, not of keys.
	slices.Reverse(put)
	for _, id := range put {
		if err := in.Put(ctx, "MHLW", sample(id)); err != nil {
			t.Fatal(err)
		}
	}
	if err := in.Put(ctx, "METI", sample(newID(t))); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		limit int
		want  []string
	}{
		{name: "default", limit: 0, want: put},
		{name: "limit_3", limit: 3, want: put[:3]},
		{name: "limit_1", limit: 1, want: put[:1]},
		{name: "limit_500", limit: 500, want: put},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := in.List(ctx, "MHLW", tc.limit)
			if err != nil || !slices.Equal(ids(got), tc.want) {
				t.Errorf("List(%d) = %v, %v; want %v", tc.limit, ids(got), err, tc.want)
			}
		})
	}
	for _, limit := range []int{-1, 501} {
		if _, err := in.List(ctx, "MHLW", limit); !errors.Is(err, delivery.ErrInvalidLimit) {
			t.Errorf("List(%d) = %v, want ErrInvalidLimit", limit, err)
		}
	}
	empty, err := in.List(ctx, "MOFA", 0)
	if err != nil || len(empty) != 0 {
		t.Errorf("List of an empty inbox = %v, %v", ids(empty), err)
	}
}

func TestInboxListStopsEarlyOnLargeInbox(t *testing.T) {
	// More entries than the KV watcher buffers (256): List must stop and
	// release the watcher without leaking its goroutine (goleak checks).
	ctx := context.Background()
	in := newInbox(t)
	var put []string
	for range 300 {
		id := newID(t)
		put = append(put, id)
		if err := in.Put(ctx, "MHLW", sample(id)); err != nil {
			t.Fatal(err)
		}
	}
	got, err := in.List(ctx, "MHLW", 5)
	if err != nil || !slices.Equal(ids(got), put[:5]) {
		t.Fatalf("List(5) = %v, %v", ids(got), err)
	}
	got, err = in.List(ctx, "MHLW", delivery.MaxListLimit)
	if err != nil || !slices.Equal(ids(got), put) {
		t.Fatalf("List(500) returned %d entries, err %v; want the 300 in order", len(got), err)
	}
}

func TestInboxRemove(t *testing.T) {
	ctx := context.Background()
	in := newInbox(t)
	d := sample(newID(t))
	if err := in.Put(ctx, "MHLW", d); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if err := in.Remove(ctx, "MHLW", d.ID); err != nil {
			t.Fatalf("Remove #%d = %v, want nil", i+1, err)
		}
	}
	_, err := in.Get(ctx, "MHLW", d.ID)
	if !errors.Is(err, delivery.ErrNotInInbox) || api.KindOf(err) != api.KindNotFound {
		t.Errorf("Get after Remove = %v, want ErrNotInInbox", err)
	}
	// A redelivered copy does not bring a removed message back (I3).
	if err := in.Put(ctx, "MHLW", d); err != nil {
		t.Fatalf("Put after Remove = %v, want nil", err)
	}
	if got, err := in.List(ctx, "MHLW", 0); err != nil || len(got) != 0 {
		t.Errorf("List after Remove and Put = %v, %v; want empty", ids(got), err)
	}
	// Acking an id that was never put leaves no marker behind.
	early := sample(newID(t))
	if err := in.Remove(ctx, "MHLW", early.ID); err != nil {
		t.Fatalf("Remove of an absent id = %v", err)
	}
	if err := in.Put(ctx, "MHLW", early); err != nil {
		t.Fatal(err)
	}
	if _, err := in.Get(ctx, "MHLW", early.ID); err != nil {
		t.Errorf("Get of a message put after an early ack = %v", err)
	}
}

func TestInboxRefusesInvalidNames(t *testing.T) {
	ctx := context.Background()
	in := newInbox(t)
	id := newID(t)
	if err := in.Put(ctx, "MHLW", sample(id)); err != nil {
		t.Fatal(err)
	}
	badAgencies := []string{"MH.LW", "*", ">", "MHLW.*", "MHLW.>", "", "mhlw", "-MHLW", "JP:MHLW", "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456"}
	for _, agency := range badAgencies {
		t.Run(fmt.Sprintf("agency_%q", agency), func(t *testing.T) {
			calls := map[string]error{
				"Put":    in.Put(ctx, agency, sample(newID(t))),
				"Remove": in.Remove(ctx, agency, id),
			}
			_, calls["List"] = in.List(ctx, agency, 0)
			_, calls["Get"] = in.Get(ctx, agency, id)
			for name, err := range calls {
				if !errors.Is(err, delivery.ErrInvalidAgency) || api.KindOf(err) != api.KindInvalid {
					t.Errorf("%s = %v, want ErrInvalidAgency", name, err)
				}
			}
		})
	}
	for _, bad := range []string{"*", ">", "x", id + ".x", "MHLW." + id} {
		if _, err := in.Get(ctx, "MHLW", bad); !errors.Is(err, delivery.ErrInvalidID) {
			t.Errorf("Get(%q) = %v, want ErrInvalidID", bad, err)
		}
		if err := in.Put(ctx, "MHLW", sample(bad)); !errors.Is(err, delivery.ErrInvalidID) {
			t.Errorf("Put(%q) = %v, want ErrInvalidID", bad, err)
		}
	}
	if got, err := in.List(ctx, "MHLW", 0); err != nil || len(got) != 1 {
		t.Errorf("List after refused calls = %v, %v; want the one entry", ids(got), err)
	}
}

func TestInboxSurvivesRestart(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	n := startNATS(t, dir)
	in := delivery.NewInbox(inboxBucket(t, n))
	kept, acked := sample(newID(t)), sample(newID(t))
	for _, d := range []*api.Delivery{kept, acked} {
		if err := in.Put(ctx, "MHLW", d); err != nil {
			t.Fatal(err)
		}
	}
	if err := in.Remove(ctx, "MHLW", acked.ID); err != nil {
		t.Fatal(err)
	}
	n.stop()

	n2 := startNATS(t, dir)
	kv, err := n2.js.KeyValue(ctx, "cmx_inbox")
	if err != nil {
		t.Fatalf("bucket after restart: %v", err)
	}
	in = delivery.NewInbox(kv)
	got, err := in.List(ctx, "MHLW", 0)
	if err != nil || !slices.Equal(ids(got), []string{kept.ID}) {
		t.Fatalf("List after restart = %v, %v; want [%s]", ids(got), err, kept.ID)
	}
	if _, err := in.Get(ctx, "MHLW", acked.ID); !errors.Is(err, delivery.ErrNotInInbox) {
		t.Errorf("removed message after restart: %v", err)
	}
	if err := in.Put(ctx, "MHLW", acked); err != nil {
		t.Fatal(err)
	}
	if _, err := in.Get(ctx, "MHLW", acked.ID); !errors.Is(err, delivery.ErrNotInInbox) {
		t.Errorf("removed message came back after restart and Put: %v", err)
	}
}

func TestInboxWatcherReleasedWhenBlocked(t *testing.T) {
	// A KV watcher whose channel is full blocks its delivery goroutine;
	// List's early stop must unblock it (goleak in TestMain checks).
	ctx := context.Background()
	kv := inboxBucket(t, startNATS(t, t.TempDir()))
	for range 300 {
		if _, err := kv.Put(ctx, "MHLW."+newID(t), []byte(`{}`)); err != nil {
			t.Fatal(err)
		}
	}
	w, err := kv.Watch(ctx, "MHLW.*", jetstream.IgnoreDeletes())
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, func() bool { return len(w.Updates()) == cap(w.Updates()) })
	delivery.StopWatch(w)
	select {
	case _, ok := <-w.Updates():
		if ok {
			t.Fatal("watcher channel still open after StopWatch")
		}
	default:
		t.Fatal("watcher channel neither closed nor drained")
	}
}
