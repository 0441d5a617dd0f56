package ingress

import (
	"bytes"
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"mime"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/cmx-exchange/cmx/envelope"
	"github.com/cmx-exchange/cmx/gateway/api"
)

// OpenAPI is the OpenAPI 3.1 description of the routes, served at /v1/openapi.yaml.
//
//go:embed openapi.yaml
var OpenAPI []byte

// route is one entry of the API. The table below is the only list of routes:
// New registers it and the OpenAPI test compares it with openapi.yaml.
type route struct {
	method, path string
	public       bool // no authentication nor rate limit
	handle       func(*Server, http.ResponseWriter, *http.Request)
}

func (rt route) pattern() string { return rt.method + " " + rt.path }

var routes = []route{
	{method: http.MethodPost, path: "/v1/messages", handle: (*Server).submit},
	{method: http.MethodGet, path: "/v1/messages/{id}", handle: (*Server).message},
	{method: http.MethodGet, path: "/v1/messages/{id}/receipts", handle: (*Server).receipts},
	{method: http.MethodGet, path: "/v1/messages/{id}/evidence", handle: (*Server).evidence},
	{method: http.MethodGet, path: "/v1/inbox", handle: (*Server).inbox},
	{method: http.MethodPost, path: "/v1/inbox/{id}/ack", handle: (*Server).ack},
	{method: http.MethodGet, path: "/v1/peers", handle: (*Server).peers},
	{method: http.MethodGet, path: "/v1/openapi.yaml", public: true, handle: (*Server).openapi},
	{method: http.MethodGet, path: "/healthz", public: true, handle: (*Server).healthz},
	{method: http.MethodGet, path: "/readyz", public: true, handle: (*Server).readyz},
}

// settleTimeout bounds the write of an idempotency record's outcome.
const settleTimeout = 5 * time.Second

// Inbox page sizes.
const (
	DefaultInboxLimit = 10
	MaxInboxLimit     = 100
)

// submit handles POST /v1/messages. Order: headers, body (bounded), strict
// decode, permissions, idempotency claim, Submit (detached from the client so
// a disconnect cannot abandon a publish half-way), record, answer.
func (s *Server) submit(w http.ResponseWriter, r *http.Request) {
	ag := agencyOf(r.Context())
	key, err := checkSubmitHeaders(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	raw, err := s.readBody(w, r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	req, err := DecodeSubmit(raw)
	if err == nil {
		err = s.checkSubmit(ag, req)
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), s.cfg.IdemInFlightTimeout)
	defer cancel()
	if key == "" {
		id := envelope.NewID()
		body, err := s.submitOnce(ctx, ag.ID, id, req)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		writeAccepted(w, id, body, false)
		return
	}
	sum := sha256.Sum256(raw)
	c, err := s.claimKey(ctx, ag.ID+"."+key, hex.EncodeToString(sum[:]))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if c.replay {
		writeAccepted(w, c.rec.ID, c.rec.Response, true)
		return
	}
	body, err := s.submitOnce(ctx, ag.ID, c.rec.ID, req)
	sctx, scancel := context.WithTimeout(context.WithoutCancel(r.Context()), settleTimeout)
	defer scancel()
	s.settle(sctx, c, body, err) // with its own deadline: Submit may have used all of ctx's
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeAccepted(w, c.rec.ID, body, false)
}

// submitOnce calls the Backend and returns the 202 body.
func (s *Server) submitOnce(ctx context.Context, agency, id string, req *api.SubmitRequest) ([]byte, error) {
	resp, err := s.backend.Submit(ctx, agency, id, req)
	if err != nil {
		return nil, err
	}
	if resp == nil || (resp.ID != "" && resp.ID != id) {
		return nil, errors.New("ingress: backend answered Submit with another message id")
	}
	out := api.SubmitResponse{ID: id, Status: resp.Status}
	if out.Status == "" {
		out.Status = api.StatusAccepted
	}
	return mustJSON(out), nil
}

func writeAccepted(w http.ResponseWriter, id string, body []byte, replayed bool) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Location", "/v1/messages/"+id)
	if replayed {
		h.Set("Idempotent-Replayed", "true")
	}
	w.WriteHeader(http.StatusAccepted)
	_, _ = w.Write(body)
}

// checkSubmitHeaders checks media type, encoding and Idempotency-Key, and
// returns the key ("" if none).
func checkSubmitHeaders(r *http.Request) (string, error) {
	cts := r.Header.Values("Content-Type")
	if len(cts) != 1 {
		return "", problem(http.StatusUnsupportedMediaType, CodeUnsupportedMediaType, "Content-Type must be application/json")
	}
	mt, params, err := mime.ParseMediaType(cts[0])
	if cs, ok := params["charset"]; err != nil || mt != "application/json" || (ok && !strings.EqualFold(cs, "utf-8")) {
		return "", problem(http.StatusUnsupportedMediaType, CodeUnsupportedMediaType, "Content-Type must be application/json")
	}
	for _, ce := range r.Header.Values("Content-Encoding") {
		if !strings.EqualFold(strings.TrimSpace(ce), "identity") {
			return "", problem(http.StatusUnsupportedMediaType, CodeUnsupportedMediaType, "Content-Encoding is not supported")
		}
	}
	return idempotencyKey(r)
}

// readBody reads the whole body, at most MaxBodyBytes, refusing a declared
// larger length before reading a byte.
func (s *Server) readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	limit := s.cfg.MaxBodyBytes
	tooLarge := problem(http.StatusRequestEntityTooLarge, CodeBodyTooLarge,
		"request body larger than "+strconv.FormatInt(limit, 10)+" bytes")
	if r.ContentLength > limit {
		w.Header().Set("Connection", "close")
		return nil, tooLarge
	}
	var buf bytes.Buffer
	buf.Grow(int(min(max(r.ContentLength, 512), limit) + 1))
	_, err := buf.ReadFrom(http.MaxBytesReader(w, r.Body, limit))
	var mbe *http.MaxBytesError
	var ne net.Error
	switch {
	case err == nil:
		return buf.Bytes(), nil
	case errors.As(err, &mbe):
		return nil, tooLarge
	case errors.As(err, &ne) && ne.Timeout():
		w.Header().Set("Connection", "close")
		return nil, &problemErr{status: http.StatusRequestTimeout, code: CodeRequestTimeout, detail: "request body too slow", err: err}
	}
	w.Header().Set("Connection", "close")
	return nil, &problemErr{status: http.StatusBadRequest, code: CodeBodyUnreadable, detail: "request body could not be read", err: err}
}

var (
	peerRE    = regexp.MustCompile(`^[A-Z]{2}$`)
	agencyRE  = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9:_.-]{0,127}$`)
	corrRE    = regexp.MustCompile(`^[A-Za-z0-9._:/+=@-]{1,128}$`)
	markingRE = regexp.MustCompile(`^[A-Za-z0-9:+_./-]{1,64}$`)
)

// checkSubmit checks the meaning of a decoded request for agency ag. The
// values checked here may later travel in NATS or webhook headers, so their
// character sets exclude CR, LF and every other control character (H-20).
func (s *Server) checkSubmit(ag *principal, req *api.SubmitRequest) error {
	bad := func(field, detail string) error {
		return problem(http.StatusBadRequest, CodeInvalidField, detail).withField(field)
	}
	switch {
	case req.Type == "":
		return problem(http.StatusBadRequest, CodeMissingField, "type is required").withField("type")
	case !envelope.Type(req.Type).Valid():
		return problem(http.StatusUnprocessableEntity, CodeUnknownType, "unknown message type").withField("type")
	case !ag.send[req.Type]:
		return problem(http.StatusForbidden, CodeForbidden, "this agency may not send this type").withField("type")
	case req.To == "":
		return problem(http.StatusBadRequest, CodeMissingField, "to is required").withField("to")
	case !peerRE.MatchString(req.To) || req.To == s.cfg.Party:
		return problem(http.StatusUnprocessableEntity, CodeUnknownPeer, "to must name a peer party").withField("to")
	case req.Recipient != "" && !agencyRE.MatchString(req.Recipient):
		return bad("recipient", "recipient must be 1..128 of [A-Za-z0-9:_.-]")
	case req.CorrelationID != "" && !corrRE.MatchString(req.CorrelationID):
		return bad("correlation_id", "correlation_id must be 1..128 of [A-Za-z0-9._:/+=@-]")
	case req.Marking != "" && !markingRE.MatchString(req.Marking):
		return bad("marking", "marking must be 1..64 of [A-Za-z0-9:+_./-]")
	}
	return nil
}

func (s *Server) message(w http.ResponseWriter, r *http.Request) {
	s.byID(w, r, func(ctx context.Context, agency, id string) (any, error) { return s.backend.Message(ctx, agency, id) })
}

func (s *Server) receipts(w http.ResponseWriter, r *http.Request) {
	s.byID(w, r, func(ctx context.Context, agency, id string) (any, error) { return s.backend.Receipts(ctx, agency, id) })
}

func (s *Server) evidence(w http.ResponseWriter, r *http.Request) {
	s.byID(w, r, func(ctx context.Context, agency, id string) (any, error) { return s.backend.Evidence(ctx, agency, id) })
}

// byID answers a GET of one message's resource.
func (s *Server) byID(w http.ResponseWriter, r *http.Request, get func(context.Context, string, string) (any, error)) {
	id, err := pathID(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	v, err := get(r.Context(), agencyOf(r.Context()).ID, id)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, v)
}

func (s *Server) inbox(w http.ResponseWriter, r *http.Request) {
	limit := DefaultInboxLimit
	if vals, ok := r.URL.Query()["limit"]; ok {
		n, err := strconv.Atoi(vals[0])
		if len(vals) != 1 || err != nil || n < 1 || n > MaxInboxLimit {
			s.fail(w, r, problem(http.StatusBadRequest, CodeInvalidParameter,
				"limit must be one integer in 1.."+strconv.Itoa(MaxInboxLimit)).withField("limit"))
			return
		}
		limit = n
	}
	ds, err := s.backend.Inbox(r.Context(), agencyOf(r.Context()).ID, limit)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if ds == nil {
		ds = []api.Delivery{}
	}
	writeJSON(w, http.StatusOK, api.Inbox{Deliveries: ds})
}

func (s *Server) ack(w http.ResponseWriter, r *http.Request) {
	id, err := pathID(r)
	if err == nil {
		err = s.backend.AckInbox(r.Context(), agencyOf(r.Context()).ID, id)
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) peers(w http.ResponseWriter, r *http.Request) {
	if !agencyOf(r.Context()).Admin {
		s.fail(w, r, problem(http.StatusForbidden, CodeForbidden, "peer status is for operators"))
		return
	}
	ps, err := s.backend.Peers(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if ps == nil {
		ps = []api.PeerStatus{}
	}
	writeJSON(w, http.StatusOK, api.Peers{Peers: ps})
}

func (s *Server) openapi(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/yaml")
	_, _ = w.Write(OpenAPI)
}

func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// readyTimeout bounds Backend.Ready so a probe never hangs.
const readyTimeout = 5 * time.Second

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), readyTimeout)
	defer cancel()
	if err := s.backend.Ready(ctx); err != nil {
		s.log.WarnContext(r.Context(), "not ready", "error", err)
		writeProblem(w, r, &problemErr{status: http.StatusServiceUnavailable, code: CodeNotReady,
			detail: "the gateway is not ready", retryAfter: 1})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		panic(err) // API shapes always marshal; recovered into a 500
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// pathID returns the {id} path value if it is a message id.
func pathID(r *http.Request) (string, error) {
	id := r.PathValue("id")
	if !envelope.ValidID(id) {
		return "", problem(http.StatusBadRequest, CodeInvalidID, "id must be a UUIDv7 in canonical lower-case form").withField("id")
	}
	return id, nil
}
