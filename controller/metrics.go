package controller

import (
	"time"

	"github.com/gitfleet/gitfleet/controller/reconcile"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

type metrics struct {
	reconciles *prometheus.CounterVec
	duration   prometheus.Histogram
	webhooks   *prometheus.CounterVec
}

func newMetrics(reg *prometheus.Registry, c *Controller) *metrics {
	m := &metrics{
		reconciles: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gitfleet_reconciles_total", Help: "Commits reconciled, by outcome (applied, unchanged, refused, behind, error).",
		}, []string{"outcome"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "gitfleet_reconcile_duration_seconds", Help: "Time to load, validate and apply one commit.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 14),
		}),
		webhooks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gitfleet_webhook_requests_total", Help: "Webhook requests, by provider and outcome.",
		}, []string{"provider", "outcome"}),
	}
	reg.MustRegister(m.reconciles, m.duration, m.webhooks,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "gitfleet_live_commit_age_seconds", Help: "Seconds since the served commit was loaded; -1 before the first.",
		}, func() float64 {
			if s := c.rec.Live(); s != nil {
				return time.Since(s.Commit.Loaded).Seconds()
			}
			return -1
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "gitfleet_git_fetch_failures", Help: "Consecutive fetches that could not reach the fleet repository.",
		}, func() float64 { return float64(c.opts.Source.Status().Failures) }),
	)
	return m
}

func (m *metrics) observe(res reconcile.Result, err error, d time.Duration) {
	outcome := string(res.Outcome)
	if err != nil {
		outcome = "error"
	}
	m.reconciles.WithLabelValues(outcome).Inc()
	m.duration.Observe(d.Seconds())
}
