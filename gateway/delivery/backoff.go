package delivery

import (
	"math/rand/v2"
	"time"
)

// backoffSteps are the redelivery delays for JetStream delivery attempts
// 1, 2, 3, ...; the last one repeats.
var backoffSteps = []time.Duration{
	time.Second, 5 * time.Second, 30 * time.Second, 2 * time.Minute, 10 * time.Minute, 30 * time.Minute,
}

// MaxBackoff caps every Backoff result.
const MaxBackoff = time.Hour

// Backoff returns the NakWithDelay delay after JetStream delivery attempt n
// (1-based, meta.NumDelivered; 0 counts as 1) failed transiently: 1s, 5s,
// 30s, 2m, 10m, then 30m, each with ±10% jitter so that messages failed by
// one outage do not return together; at least the agency's retryAfter
// (jittered upward only, never earlier than asked); never more than 1h.
func Backoff(attempt uint64, retryAfter time.Duration) time.Duration {
	if retryAfter >= MaxBackoff {
		return MaxBackoff
	}
	base := backoffStep(attempt)
	d := base - base/10 + rand.N(base/5+1)
	if retryAfter > 0 {
		d = max(d, retryAfter+rand.N(retryAfter/10+1))
	}
	return min(d, MaxBackoff)
}

func backoffStep(attempt uint64) time.Duration {
	i := max(attempt, 1) - 1
	if i >= uint64(len(backoffSteps)) {
		i = uint64(len(backoffSteps)) - 1
	}
	return backoffSteps[i]
}
