package ingress

import (
	"context"
	"encoding/json"
	"sync"
	"time"

	"github.com/cmx-exchange/cmx/gateway/api"
)

// submitCall is one call of Backend.Submit as the fake saw it.
type submitCall struct {
	agency, id string
	req        api.SubmitRequest
	ctxErr     error // ctx.Err() when Submit returned
}

// fakeBackend is an in-memory Backend (our own interface) with programmable
// faults. Messages it accepted are visible to their sender and to admins.
type fakeBackend struct {
	mu       sync.Mutex
	calls    []submitCall
	owner    map[string]string // message id -> agency
	submitFn func(ctx context.Context, agency, id string) error
	readyErr error
	inbox    map[string][]api.Delivery
	panicID  string
}

func newFakeBackend() *fakeBackend {
	return &fakeBackend{owner: map[string]string{}, inbox: map[string][]api.Delivery{}}
}

func (f *fakeBackend) setSubmit(fn func(ctx context.Context, agency, id string) error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.submitFn = fn
}

func (f *fakeBackend) Submit(ctx context.Context, agency, id string, req *api.SubmitRequest) (*api.SubmitResponse, error) {
	f.mu.Lock()
	fn := f.submitFn
	f.mu.Unlock()
	var err error
	if fn != nil {
		err = fn(ctx, agency, id)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, submitCall{agency: agency, id: id, req: *req, ctxErr: ctx.Err()})
	if err != nil {
		return nil, err
	}
	f.owner[id] = agency
	return &api.SubmitResponse{ID: id, Status: api.StatusAccepted}, nil
}

func (f *fakeBackend) submits() []submitCall {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]submitCall(nil), f.calls...)
}

// visible applies the rule the gateway root will: own messages, or any for admins.
func (f *fakeBackend) visible(ctx context.Context, agency, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if id == f.panicID {
		panic("fake backend: boom")
	}
	a, _ := AgencyFrom(ctx)
	if owner, ok := f.owner[id]; ok && (owner == agency || a.Admin) {
		return nil
	}
	return &api.Error{Kind: api.KindNotFound, Code: "not-found", Detail: "no such message"}
}

func (f *fakeBackend) Message(ctx context.Context, agency, id string) (*api.Message, error) {
	if err := f.visible(ctx, agency, id); err != nil {
		return nil, err
	}
	return &api.Message{ID: id, Direction: api.Outbound, Status: api.StatusAccepted,
		Timeline: []api.Event{{Status: api.StatusAccepted, At: time.Unix(1700000000, 0).UTC()}}}, nil
}

func (f *fakeBackend) Receipts(ctx context.Context, agency, id string) (*api.Receipts, error) {
	if err := f.visible(ctx, agency, id); err != nil {
		return nil, err
	}
	return &api.Receipts{ID: id, Receipts: []string{"a.b.c"}}, nil
}

func (f *fakeBackend) Evidence(ctx context.Context, agency, id string) (*api.Evidence, error) {
	if err := f.visible(ctx, agency, id); err != nil {
		return nil, err
	}
	return &api.Evidence{ID: id, Direction: api.Outbound, Receipts: []string{}}, nil
}

func (f *fakeBackend) Inbox(_ context.Context, agency string, limit int) ([]api.Delivery, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	ds := f.inbox[agency]
	return ds[:min(limit, len(ds))], nil
}

func (f *fakeBackend) AckInbox(_ context.Context, agency, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, d := range f.inbox[agency] {
		if d.ID == id {
			f.inbox[agency] = append(f.inbox[agency][:i:i], f.inbox[agency][i+1:]...)
			return nil
		}
	}
	return &api.Error{Kind: api.KindNotFound, Code: "not-found", Detail: "no such delivery"}
}

func (f *fakeBackend) Peers(context.Context) ([]api.PeerStatus, error) {
	return []api.PeerStatus{{Party: "JP", Link: "up"}}, nil
}

func (f *fakeBackend) Ready(context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.readyErr
}

func (f *fakeBackend) addDelivery(agency, id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.inbox[agency] = append(f.inbox[agency], api.Delivery{ID: id, Type: "labor_enforcement_notice", From: "JP",
		Sender: "JP:MHLW", Recipient: "US:" + agency, Body: json.RawMessage(`{}`), JWS: "a.b.c"})
}
