package pair

import (
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/cmx-exchange/cmx/gateway/api"
)

// Agency is a sample agency back-office: an HTTP webhook receiver on
// 127.0.0.1 that records deliveries, deduplicating on Idempotency-Key as
// DESIGN.md asks every agency to do, and answers 204 at once.
type Agency struct {
	srv *http.Server
	ln  net.Listener

	mu    sync.Mutex
	hits  int
	seen  map[string]api.Delivery
	order []string
	at    map[string]time.Time
}

// StartAgency starts a sample agency webhook.
func StartAgency() (*Agency, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	a := &Agency{ln: ln, seen: map[string]api.Delivery{}, at: map[string]time.Time{}}
	a.srv = &http.Server{Handler: http.HandlerFunc(a.serve), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = a.srv.Serve(ln) }()
	return a, nil
}

// URL is the webhook URL.
func (a *Agency) URL() string { return "http://" + a.ln.Addr().String() + "/cmx/deliveries" }

// Close stops the server.
func (a *Agency) Close() error { return a.srv.Close() }

func (a *Agency) serve(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "POST only", http.StatusMethodNotAllowed)
		return
	}
	var d api.Delivery
	b, err := io.ReadAll(io.LimitReader(r.Body, 16<<20))
	if err == nil {
		err = json.Unmarshal(b, &d)
	}
	key := r.Header.Get("Idempotency-Key")
	if err == nil && key != d.ID {
		err = errors.New("Idempotency-Key differs from the message id")
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	a.mu.Lock()
	a.hits++
	if _, dup := a.seen[key]; !dup {
		a.seen[key] = d
		a.order = append(a.order, key)
		a.at[key] = time.Now()
	}
	a.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

// Hits counts raw webhook calls.
func (a *Agency) Hits() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.hits
}

// Delivery returns the delivery recorded under id.
func (a *Agency) Delivery(id string) (api.Delivery, time.Time, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	d, ok := a.seen[id]
	return d, a.at[id], ok
}

// Count is the number of distinct deliveries.
func (a *Agency) Count() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.order)
}
