package main

import (
	"math"
	"slices"
	"time"
)

// spread is the median and range of repeated measurements.
type spread struct {
	Median float64 `json:"median"`
	Min    float64 `json:"min"`
	Max    float64 `json:"max"`
	// RelSpread is (max-min)/median: how far to trust one run.
	RelSpread float64 `json:"rel_spread"`
}

func spreadOf(v []float64) spread {
	if len(v) == 0 {
		return spread{}
	}
	s := slices.Sorted(slices.Values(v))
	med := s[len(s)/2]
	if len(s)%2 == 0 {
		med = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	sp := spread{Median: med, Min: s[0], Max: s[len(s)-1]}
	if med > 0 {
		sp.RelSpread = (sp.Max - sp.Min) / med
	}
	return sp
}

// latency is a latency distribution in milliseconds.
type latency struct {
	N   int     `json:"n"`
	P50 float64 `json:"p50_ms"`
	P90 float64 `json:"p90_ms"`
	P99 float64 `json:"p99_ms"`
	Max float64 `json:"max_ms"`
}

// latencyOf summarises durations with nearest-rank percentiles.
func latencyOf(d []time.Duration) latency {
	if len(d) == 0 {
		return latency{}
	}
	s := slices.Sorted(slices.Values(d))
	rank := func(p float64) float64 {
		i := int(math.Ceil(p*float64(len(s)))) - 1
		return ms(s[max(i, 0)])
	}
	return latency{N: len(s), P50: rank(0.50), P90: rank(0.90), P99: rank(0.99), Max: ms(s[len(s)-1])}
}

func ms(d time.Duration) float64 { return math.Round(float64(d.Microseconds())) / 1000 }

// round3 keeps three significant decimals for the JSON file.
func round3(v float64) float64 { return math.Round(v*1000) / 1000 }
