package ingress

import (
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// openAPIDoc is the part of openapi.yaml the tests compare with the code.
type openAPIDoc struct {
	OpenAPI string                                 `yaml:"openapi"`
	Paths   map[string]map[string]openAPIOperation `yaml:"paths"`
	Comps   struct {
		Security map[string]struct {
			Type string `yaml:"type"`
		} `yaml:"securitySchemes"`
	} `yaml:"components"`
}

type openAPIOperation struct {
	Responses map[string]any `yaml:"responses"`
	MountedBy string         `yaml:"x-cmx-mounted-by"`
}

func loadOpenAPI() (*openAPIDoc, error) {
	var doc openAPIDoc
	if err := yaml.Unmarshal(OpenAPI, &doc); err != nil {
		return nil, fmt.Errorf("openapi.yaml: %w", err)
	}
	return &doc, nil
}

// documents reports whether the route with ServeMux pattern answers status
// according to the document.
func (d *openAPIDoc) documents(pattern string, status int) bool {
	method, path, _ := strings.Cut(pattern, " ")
	op, ok := d.Paths[path][strings.ToLower(method)]
	if !ok {
		return false
	}
	_, ok = op.Responses[strconv.Itoa(status)]
	return ok
}

// ownRoutes lists "METHOD path" of the operations ingress itself serves.
func (d *openAPIDoc) ownRoutes() []string {
	var out []string
	for path, ops := range d.Paths {
		for method, op := range ops {
			if op.MountedBy == "" {
				out = append(out, strings.ToUpper(method)+" "+path)
			}
		}
	}
	slices.Sort(out)
	return out
}

func TestOpenAPIMatchesRoutes(t *testing.T) {
	doc, err := loadOpenAPI()
	if err != nil {
		t.Fatal(err)
	}
	if doc.OpenAPI != "3.1.0" {
		t.Fatalf("openapi %q, want 3.1.0", doc.OpenAPI)
	}
	var code []string
	for _, rt := range routes {
		code = append(code, rt.pattern())
	}
	slices.Sort(code)
	if got := doc.ownRoutes(); !slices.Equal(got, code) {
		t.Fatalf("openapi.yaml routes\n  %v\nserver routes\n  %v", got, code)
	}
	kinds := map[string]bool{}
	for _, s := range doc.Comps.Security {
		kinds[s.Type] = true
	}
	if !kinds["http"] || !kinds["mutualTLS"] {
		t.Fatalf("securitySchemes %v, want http bearer and mutualTLS", slices.Collect(maps.Keys(kinds)))
	}

	// Make each route answer the statuses it can produce, and check that the
	// document lists each one. (TestMain also checks every status any test saw.)
	e := newEnv(t, envOption{cfg: func(c *Config) { c.Burst = 1000 }})
	id := wantAccepted(t, e.submit(t, tokDOL, validBody))
	other := "01890000-0000-7000-8000-000000000000"
	e.be.addDelivery("DOL-ILAB", other)
	type probe struct {
		method, path, token, body string
		want                      int
	}
	probes := []probe{
		{http.MethodPost, "/v1/messages", tokDOL, `{"type":"investment_review_best_practice","to":"JP","body":{}}`, http.StatusForbidden},
		{http.MethodPost, "/v1/messages", tokDOL, `{"type":"labor_enforcement_notice","to":"US","body":{}}`, http.StatusUnprocessableEntity},
		{http.MethodPost, "/v1/messages", tokDOL, `{`, http.StatusBadRequest},
		{http.MethodPost, "/v1/messages", "", validBody, http.StatusUnauthorized},
		{http.MethodGet, "/v1/messages/" + id, tokDOL, "", http.StatusOK},
		{http.MethodGet, "/v1/messages/" + other, tokDOL, "", http.StatusNotFound},
		{http.MethodGet, "/v1/messages/x", tokDOL, "", http.StatusBadRequest},
		{http.MethodGet, "/v1/messages/" + id + "/receipts", tokDOL, "", http.StatusOK},
		{http.MethodGet, "/v1/messages/" + other + "/receipts", tokDOL, "", http.StatusNotFound},
		{http.MethodGet, "/v1/messages/" + id + "/evidence", tokDOL, "", http.StatusOK},
		{http.MethodGet, "/v1/messages/" + other + "/evidence", tokUSTR, "", http.StatusNotFound},
		{http.MethodGet, "/v1/inbox?limit=5", tokDOL, "", http.StatusOK},
		{http.MethodGet, "/v1/inbox?limit=0", tokDOL, "", http.StatusBadRequest},
		{http.MethodPost, "/v1/inbox/" + other + "/ack", tokDOL, "", http.StatusNoContent},
		{http.MethodPost, "/v1/inbox/" + other + "/ack", tokDOL, "", http.StatusNotFound},
		{http.MethodGet, "/v1/peers", tokOps, "", http.StatusOK},
		{http.MethodGet, "/v1/peers", tokDOL, "", http.StatusForbidden},
		{http.MethodGet, "/v1/openapi.yaml", "", "", http.StatusOK},
		{http.MethodGet, "/healthz", "", "", http.StatusOK},
		{http.MethodGet, "/readyz", "", "", http.StatusOK},
	}
	for _, p := range probes {
		r := e.do(t, p.method, p.path, p.token, p.body)
		if r.status != p.want {
			t.Errorf("%s %s: %d, want %d (%s)", p.method, p.path, r.status, p.want, r.body)
		}
		pattern := routePattern(t, e, p.method, p.path)
		if !doc.documents(pattern, r.status) {
			t.Errorf("%s answered %d; openapi.yaml does not document it", pattern, r.status)
		}
	}
	r := e.do(t, http.MethodGet, "/v1/openapi.yaml", "", "")
	if ct := r.header.Get("Content-Type"); ct != "application/yaml" || string(r.body) != string(OpenAPI) {
		t.Fatalf("served openapi: %q, %d bytes", ct, len(r.body))
	}
}

// routePattern finds which route pattern serves method and path.
func routePattern(t *testing.T, e *env, method, path string) string {
	t.Helper()
	req, err := http.NewRequest(method, e.base+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, pattern := e.srv.mux.Handler(req)
	return pattern
}
