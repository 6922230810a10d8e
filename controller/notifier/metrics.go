package notifier

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics exports the sinks' counters, those of replaced sinks included,
// so the counters of a Notification only grow while its name stays.
type metrics struct {
	n        *Notifier
	events   *prometheus.Desc
	messages *prometheus.Desc
	queued   *prometheus.Desc
	problems *prometheus.Desc
	ignored  *prometheus.Desc

	mu        sync.Mutex
	ignoredBy map[string]uint64 // event kind → events not notified
}

func newMetrics(n *Notifier) *metrics {
	labels := []string{"notification", "sink"}
	return &metrics{
		n: n,
		events: prometheus.NewDesc("gitfleet_notification_events_total",
			"Events a Notification selected, by outcome: delivered, failed (delivery gave up) or dropped (queue full).",
			append(labels, "outcome"), nil),
		messages: prometheus.NewDesc("gitfleet_notification_messages_total",
			"Requests or mails a Notification's sink sent successfully (a digest of many events is one).", labels, nil),
		queued: prometheus.NewDesc("gitfleet_notification_queued",
			"Events waiting in a Notification's queue.", labels, nil),
		problems: prometheus.NewDesc("gitfleet_notification_problems",
			"Notification manifests of the live commit that have no sink: a secret that does not resolve, or e-mail without an SMTP server (see the log).", nil, nil),
		ignored: prometheus.NewDesc("gitfleet_notification_events_ignored_total",
			"Events not notified because their kind is not in the schema's #Event list (a controller bug).", []string{"event"}, nil),
		ignoredBy: map[string]uint64{},
	}
}

func (m *metrics) ignore(kind string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.ignoredBy) < 64 || m.ignoredBy[kind] > 0 {
		m.ignoredBy[kind]++
	} else {
		m.ignoredBy["other"]++
	}
}

// Describe implements prometheus.Collector.
func (m *metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{m.events, m.messages, m.queued, m.problems, m.ignored} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	n := m.n
	n.mu.RLock()
	type row struct {
		queued                               int
		delivered, failed, dropped, messages uint64
	}
	rows := map[sinkID]*row{}
	get := func(id sinkID) *row {
		r := rows[id]
		if r == nil {
			r = &row{}
			rows[id] = r
		}
		return r
	}
	for id, st := range n.retired {
		r := get(id)
		r.delivered += st.Delivered
		r.failed += st.Failed
		r.dropped += st.Dropped
		r.messages += st.Messages
	}
	for _, e := range n.sinks {
		st := e.sink.Stats()
		r := get(e.id)
		r.queued += st.Queued
		r.delivered += st.Delivered
		r.failed += st.Failed
		r.dropped += st.Dropped
		r.messages += st.Messages
	}
	problems := len(n.problems) + len(n.sinkProblemsLocked())
	n.mu.RUnlock()

	for id, r := range rows {
		for outcome, v := range map[string]uint64{"delivered": r.delivered, "failed": r.failed, "dropped": r.dropped} {
			ch <- prometheus.MustNewConstMetric(m.events, prometheus.CounterValue, float64(v), id.name, id.kind, outcome)
		}
		ch <- prometheus.MustNewConstMetric(m.messages, prometheus.CounterValue, float64(r.messages), id.name, id.kind)
		ch <- prometheus.MustNewConstMetric(m.queued, prometheus.GaugeValue, float64(r.queued), id.name, id.kind)
	}
	ch <- prometheus.MustNewConstMetric(m.problems, prometheus.GaugeValue, float64(problems))
	m.mu.Lock()
	for kind, v := range m.ignoredBy {
		ch <- prometheus.MustNewConstMetric(m.ignored, prometheus.CounterValue, float64(v), kind)
	}
	m.mu.Unlock()
}
