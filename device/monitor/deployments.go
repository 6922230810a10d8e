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
	if len(m.deploys) >= maxDeployments {
		m.deploys = m.deploys[1:]
	}
	m.deploys = append(m.deploys, o)
}

type deploymentsProbe struct{}

func (p *deploymentsProbe) interval() time.Duration { return 10 * time.Second }

func (p *deploymentsProbe) scan(_ context.Context, env *scanEnv, base map[string]string) ([]observation, error) {
	// Called with the Monitor locked.
	ds := env.m.deploys
	env.m.deploys = nil
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
