// Package client is a small Go client of the cmx HTTP API (DESIGN.md §6),
// used by the cmx command, the demo and the tests. Errors from the gateway
// come back as *Problem (RFC 9457).
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/cmx-exchange/cmx/gateway/api"
)

// Client talks to one gateway as one agency.
type Client struct {
	BaseURL string       // e.g. "https://127.0.0.1:8443"
	Token   string       // bearer token; "" when the HTTP client presents a certificate
	HTTP    *http.Client // nil means a client with a 30 s timeout
}

// Problem is an error answer of the gateway.
type Problem struct {
	api.Problem
	RetryAfter time.Duration
}

func (p *Problem) Error() string {
	s := fmt.Sprintf("%d %s", p.Status, strings.TrimPrefix(p.Type, api.ProblemTypePrefix))
	if p.Field != "" {
		s += " (" + p.Field + ")"
	}
	if p.Detail != "" {
		s += ": " + p.Detail
	}
	return s
}

// StatusOf returns the HTTP status of a *Problem error, or 0.
func StatusOf(err error) int {
	var p *Problem
	if errors.As(err, &p) {
		return p.Status
	}
	return 0
}

var defaultHTTP = &http.Client{Timeout: 30 * time.Second}

func (c *Client) do(ctx context.Context, method, path string, body any, hdr http.Header, out any) (int, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(c.BaseURL, "/")+path, rd)
	if err != nil {
		return 0, err
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	hc := c.HTTP
	if hc == nil {
		hc = defaultHTTP
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return resp.StatusCode, err
	}
	if resp.StatusCode >= 400 {
		p := &Problem{}
		if json.Unmarshal(b, &p.Problem) != nil || p.Status == 0 {
			p.Status, p.Title, p.Detail = resp.StatusCode, http.StatusText(resp.StatusCode), string(b)
		}
		if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil {
			p.RetryAfter = time.Duration(s) * time.Second
		}
		return resp.StatusCode, p
	}
	if out != nil && len(b) > 0 {
		if err := json.Unmarshal(b, out); err != nil {
			return resp.StatusCode, fmt.Errorf("client: decode %s %s: %w", method, path, err)
		}
	}
	return resp.StatusCode, nil
}

// Submit posts a message. idemKey may be "".
func (c *Client) Submit(ctx context.Context, req *api.SubmitRequest, idemKey string) (*api.SubmitResponse, error) {
	hdr := http.Header{}
	if idemKey != "" {
		hdr.Set("Idempotency-Key", idemKey)
	}
	var out api.SubmitResponse
	if _, err := c.do(ctx, http.MethodPost, "/v1/messages", req, hdr, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Message returns a message's status and timeline.
func (c *Client) Message(ctx context.Context, id string) (*api.Message, error) {
	var out api.Message
	_, err := c.do(ctx, http.MethodGet, "/v1/messages/"+url.PathEscape(id), nil, nil, &out)
	return &out, err
}

// Receipts returns a message's signed receipts.
func (c *Client) Receipts(ctx context.Context, id string) (*api.Receipts, error) {
	var out api.Receipts
	_, err := c.do(ctx, http.MethodGet, "/v1/messages/"+url.PathEscape(id)+"/receipts", nil, nil, &out)
	return &out, err
}

// Evidence returns a message's evidence bundle.
func (c *Client) Evidence(ctx context.Context, id string) (*api.Evidence, error) {
	var out api.Evidence
	_, err := c.do(ctx, http.MethodGet, "/v1/messages/"+url.PathEscape(id)+"/evidence", nil, nil, &out)
	return &out, err
}

// Inbox lists waiting deliveries (pull agencies).
func (c *Client) Inbox(ctx context.Context, limit int) ([]api.Delivery, error) {
	var out api.Inbox
	path := "/v1/inbox"
	if limit > 0 {
		path += "?limit=" + strconv.Itoa(limit)
	}
	_, err := c.do(ctx, http.MethodGet, path, nil, nil, &out)
	return out.Deliveries, err
}

// Ack acknowledges a pulled delivery.
func (c *Client) Ack(ctx context.Context, id string) error {
	_, err := c.do(ctx, http.MethodPost, "/v1/inbox/"+url.PathEscape(id)+"/ack", nil, nil, nil)
	return err
}

// Peers returns link and backlog status (operators).
func (c *Client) Peers(ctx context.Context) ([]api.PeerStatus, error) {
	var out api.Peers
	_, err := c.do(ctx, http.MethodGet, "/v1/peers", nil, nil, &out)
	return out.Peers, err
}

// Ready reports whether the gateway is ready (GET /readyz).
func (c *Client) Ready(ctx context.Context) error {
	_, err := c.do(ctx, http.MethodGet, "/readyz", nil, nil, nil)
	return err
}
