package monitor

import (
	"context"
	"fmt"
	"time"
)

// DeploymentOutcome is how one deployment ended, as the agent's deployment
// history records it.
type DeploymentOutcome struct {
	ID       string
	Artifact string
	Status   string // "success", "failure", "already-installed", ...
	Time     time.Time
}

// maxDeployments bounds the outcomes waiting for the next scan.
const maxDeployments = 64

// ReportDeployment hands the Monitor a deployment outcome; failedDeployments
// checks raise an alert at their next scan when it is a failure. Reports
// beyond the bound are dropped, oldest first.
func (m *Monitor) ReportDeployment(o DeploymentOutcome) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, r := range m.checks {
		if p, ok := r.probe.(*deploymentsProbe); ok {
			if len(p.pending) >= maxDeployments {
				p.pending = p.pending[1:]
			}
			p.pending = append(p.pending, o)
		}
	}
}

// deploymentsProbe holds the outcomes reported since its last scan.
type deploymentsProbe struct{ pending []DeploymentOutcome }

func (p *deploymentsProbe) interval() time.Duration { return 10 * time.Second }

func (p *deploymentsProbe) scan(_ context.Context, env *scanEnv, base map[string]string) ([]observation, error) {
	// Called with the Monitor locked, as ReportDeployment is.
	ds := p.pending
	p.pending = nil
	var obs []observation
	for _, d := range ds {
		if d.Status != "failure" || base["seen:"+d.ID] != "" {
			continue
		}
		env.set(base, "seen:"+d.ID, d.Time.UTC().Format(time.RFC3339))
		obs = append(obs, observation{key: d.ID, event: true,
			evidence: fmt.Sprintf("deployment %s of %s failed", d.ID, d.Artifact)})
	}
	// Forget old deployments: keep the baseline bounded.
	if len(base) > 2*maxDeployments {
		for k := range base {
			delete(base, k)
			if len(base) <= maxDeployments {
				break
			}
		}
		env.baselineChanged = true
	}
	return obs, nil
}
