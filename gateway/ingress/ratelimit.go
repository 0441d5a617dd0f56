package ingress

import (
	"math"
	"net/http"
	"time"

	"golang.org/x/time/rate"
)

// limiter holds one token bucket per configured agency. The set of agencies
// is fixed at New, so the map never grows with traffic.
type limiter struct {
	buckets map[string]*rate.Limiter
	now     func() time.Time
}

func newLimiter(agencies []Agency, perSecond float64, burst int, now func() time.Time) *limiter {
	l := &limiter{buckets: make(map[string]*rate.Limiter, len(agencies)), now: now}
	for _, a := range agencies {
		l.buckets[a.ID] = rate.NewLimiter(rate.Limit(perSecond), burst)
	}
	return l
}

// allow takes one token from the agency's bucket. When the bucket is empty it
// takes nothing and returns the whole seconds (at least 1) until a token is due.
func (l *limiter) allow(agency string) (ok bool, retryAfter int) {
	b := l.buckets[agency]
	if b == nil {
		return false, 1
	}
	now := l.now()
	if b.AllowN(now, 1) {
		return true, 0
	}
	r := b.ReserveN(now, 1)
	delay := r.DelayFrom(now)
	r.CancelAt(now)
	if !r.OK() || delay == rate.InfDuration {
		return false, 60
	}
	return false, max(1, int(math.Ceil(delay.Seconds())))
}

func rateLimited(retryAfter int) *problemErr {
	return &problemErr{status: http.StatusTooManyRequests, code: CodeRateLimited,
		detail: "request rate above this agency's limit", retryAfter: retryAfter}
}
