package ingress

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path"
	"runtime/debug"
	"slices"
	"time"

	"github.com/cmx-exchange/cmx/gateway/api"
)

// Backend is what the HTTP edge needs from the gateway; the gateway root
// implements it. agency is the authenticated agency's ID; ctx also carries
// the whole Agency (AgencyFrom), e.g. for Admin visibility. Errors should be
// *api.Error: their Kind chooses the status, their Code the problem type;
// Detail and Field are shown to the client except for KindInternal, whose
// errors (like any other error) are logged and answered "internal error".
type Backend interface {
	// Submit seals and publishes a message with the id chosen here and returns
	// only after it is durable (PubAck). The same id may come again (retry or
	// takeover): a duplicate publish must succeed and return the same answer.
	Submit(ctx context.Context, agency string, id string, req *api.SubmitRequest) (*api.SubmitResponse, error)
	// Message returns api.KindNotFound if id is unknown or not visible to agency.
	Message(ctx context.Context, agency, id string) (*api.Message, error)
	Receipts(ctx context.Context, agency, id string) (*api.Receipts, error)
	Evidence(ctx context.Context, agency, id string) (*api.Evidence, error)
	Inbox(ctx context.Context, agency string, limit int) ([]api.Delivery, error)
	AckInbox(ctx context.Context, agency, id string) error
	Peers(ctx context.Context) ([]api.PeerStatus, error)
	// Ready returns nil when NATS, streams and keys are fine.
	Ready(ctx context.Context) error
}

// Server is the HTTP edge. It is safe for concurrent use.
type Server struct {
	cfg     Config
	backend Backend
	idem    IdemStore
	auth    *authenticator
	limits  *limiter
	log     *slog.Logger
	now     func() time.Time
	mux     *http.ServeMux
	handler http.Handler

	// observe, if set (tests), sees the route pattern and status of every answer.
	observe func(pattern string, status int)
}

// New returns a Server for cfg. backend and idem are required.
func New(cfg Config, backend Backend, idem IdemStore, opts ...Option) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if backend == nil || idem == nil {
		return nil, errors.New("ingress: New needs a Backend and an IdemStore")
	}
	var o options
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return nil, err
		}
	}
	cfg = cfg.withDefaults()
	s := &Server{
		cfg: cfg, backend: backend, idem: idem,
		auth:   newAuthenticator(cfg.Agencies),
		limits: newLimiter(cfg.Agencies, cfg.RatePerSecond, cfg.Burst, cfg.Now),
		log:    cfg.Logger, now: cfg.Now,
		mux: http.NewServeMux(),
	}
	for _, rt := range routes {
		s.mux.Handle(rt.pattern(), s.guard(rt))
	}
	for _, e := range o.extra {
		if err := register(s.mux, e.pattern, e.h); err != nil {
			return nil, err
		}
	}
	s.handler = http.HandlerFunc(s.serveHTTP)
	for _, mw := range o.wrap {
		s.handler = mw(s.handler)
	}
	return s, nil
}

// register adds a handler, turning ServeMux's panic on a bad or conflicting
// pattern into an error.
func register(mux *http.ServeMux, pattern string, h http.Handler) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("ingress: extra handler %q: %v", pattern, v)
		}
	}()
	mux.Handle(pattern, h)
	return nil
}

// Handler returns the API handler: common headers, panic recovery,
// problem+json 404/405, then per route authentication, rate limit and handler.
func (s *Server) Handler() http.Handler { return s.handler }

// HTTPServer returns an http.Server for the API with every timeout and
// MaxHeaderBytes set. With tlsCfg it serves HTTP/1.1 only (H-05: no HTTP/2
// rapid-reset or CONTINUATION surface); tlsCfg is cloned, and should require
// or verify client certificates against the agency CA for mTLS agencies.
func (s *Server) HTTPServer(addr string, tlsCfg *tls.Config) *http.Server {
	srv := &http.Server{
		Addr:              addr,
		Handler:           s.handler,
		ReadHeaderTimeout: s.cfg.ReadHeaderTimeout,
		ReadTimeout:       s.cfg.ReadTimeout,
		WriteTimeout:      s.cfg.WriteTimeout,
		IdleTimeout:       s.cfg.IdleTimeout,
		MaxHeaderBytes:    s.cfg.MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
		Protocols:         new(http.Protocols),
		TLSNextProto:      map[string]func(*http.Server, *tls.Conn, http.Handler){},
	}
	srv.Protocols.SetHTTP1(true)
	if tlsCfg != nil {
		srv.TLSConfig = tlsCfg.Clone()
		srv.TLSConfig.NextProtos = []string{"http/1.1"}
	}
	return srv
}

// Run serves on ln (TLS if tlsCfg is set) until ctx is done, then stops
// accepting, lets running requests finish (at most WriteTimeout) and returns.
func (s *Server) Run(ctx context.Context, ln net.Listener, tlsCfg *tls.Config) error {
	srv := s.HTTPServer(ln.Addr().String(), tlsCfg)
	if s.cfg.MaxConns > 0 {
		ln = limitListener(ln, s.cfg.MaxConns)
	}
	errc := make(chan error, 1)
	go func() {
		if tlsCfg != nil {
			errc <- srv.ServeTLS(ln, "", "")
		} else {
			errc <- srv.Serve(ln)
		}
	}()
	select {
	case err := <-errc:
		return fmt.Errorf("ingress: serve: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.WriteTimeout)
	defer cancel()
	err := srv.Shutdown(sctx)
	if err != nil {
		err = errors.Join(fmt.Errorf("ingress: shutdown: %w", err), srv.Close())
	}
	if serr := <-errc; !errors.Is(serr, http.ErrServerClosed) {
		err = errors.Join(err, serr)
	}
	return err
}

// serveHTTP is the outermost layer.
func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	sw := &statusWriter{ResponseWriter: w}
	start := s.now()
	defer func() {
		if v := recover(); v != nil {
			if v == http.ErrAbortHandler {
				panic(v)
			}
			s.log.ErrorContext(r.Context(), "handler panic", slog.String("route", r.Pattern),
				slog.Any("panic", v), slog.String("stack", string(debug.Stack())))
			if !sw.wrote {
				writeProblem(sw, r, problem(http.StatusInternalServerError, CodeInternal, "internal error"))
			}
		}
		s.logAccess(r, sw.status, start)
	}()
	if !s.route(sw, r) {
		return
	}
	s.mux.ServeHTTP(sw, r)
}

// route answers requests that match no route with a problem (404 or 405 with
// Allow) instead of ServeMux's text answers and path-cleaning redirects.
func (s *Server) route(w http.ResponseWriter, r *http.Request) bool {
	clean := r.URL.Path != "" && path.Clean(r.URL.Path) == r.URL.Path
	var h http.Handler
	var pattern string
	if clean {
		h, pattern = s.mux.Handler(r)
	}
	if pattern != "" {
		return true
	}
	if clean && r.Method != http.MethodConnect {
		rec := &headerRecorder{header: http.Header{}}
		h.ServeHTTP(rec, r)
		if rec.code == http.StatusMethodNotAllowed {
			w.Header().Set("Allow", rec.header.Get("Allow"))
			writeProblem(w, r, problem(http.StatusMethodNotAllowed, CodeMethodNotAllowed, "method not allowed for this path"))
			return false
		}
	}
	writeProblem(w, r, problem(http.StatusNotFound, CodeNotFound, "no such resource"))
	return false
}

// guard wraps a route: authentication, then the agency's rate limit, both
// before any body is read.
func (s *Server) guard(rt route) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if rt.public {
			rt.handle(s, w, r)
			return
		}
		p := s.auth.authenticate(r)
		if p == nil {
			s.log.InfoContext(r.Context(), "authentication failed", slog.String("route", r.Pattern),
				slog.String("remote", r.RemoteAddr))
			writeProblem(w, r, problem(http.StatusUnauthorized, CodeUnauthorized, "valid credentials are required"))
			return
		}
		if ok, after := s.limits.allow(p.ID); !ok {
			writeProblem(w, r, rateLimited(after))
			return
		}
		rt.handle(s, w, r.WithContext(withAgency(r.Context(), p)))
	})
}

func (s *Server) logAccess(r *http.Request, status int, start time.Time) {
	if s.observe != nil {
		s.observe(r.Pattern, status)
	}
	level := slog.LevelDebug
	if status >= 500 {
		level = slog.LevelError
	}
	attrs := []slog.Attr{slog.String("method", methodName(r.Method)), slog.String("route", r.Pattern),
		slog.Int("status", status), slog.Duration("duration", s.now().Sub(start))}
	if p := agencyOf(r.Context()); p != nil {
		attrs = append(attrs, slog.String("agency", p.ID))
	}
	s.log.LogAttrs(r.Context(), level, "http request", attrs...)
}

// methodName keeps client-chosen method strings out of the logs.
func methodName(m string) string {
	known := []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodConnect, http.MethodOptions, http.MethodTrace}
	if slices.Contains(known, m) {
		return m
	}
	return "OTHER"
}

// statusWriter remembers the status of the answer.
type statusWriter struct {
	http.ResponseWriter
	status int
	wrote  bool
}

func (w *statusWriter) WriteHeader(code int) {
	if !w.wrote {
		w.status, w.wrote = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if !w.wrote {
		w.status, w.wrote = http.StatusOK, true
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// headerRecorder captures what ServeMux's own 404/405 handlers would write.
type headerRecorder struct {
	header http.Header
	code   int
}

func (h *headerRecorder) Header() http.Header { return h.header }
func (h *headerRecorder) WriteHeader(code int) {
	if h.code == 0 {
		h.code = code
	}
}
func (h *headerRecorder) Write(b []byte) (int, error) { return len(b), nil }
