package main

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/go-git/go-git/v5"
	"github.com/spf13/cobra"

	"github.com/gitfleet/gitfleet/controller"
	"github.com/gitfleet/gitfleet/controller/plan"
	"github.com/gitfleet/gitfleet/policies"
)

func newPlanCmd() *cobra.Command {
	var (
		repoPath, base, head, format string
		budget                       policies.Budget
		mc                           mgmtClient
	)
	cmd := &cobra.Command{
		Use:   "plan --base REV [--head REV] [--repo PATH]",
		Short: "Say what merging a change to the fleet repository would do",
		Long: `Plan compares the fleet at two commits of a Git repository and says, in words
a reviewer reads, what merging HEAD into BASE would do: rollouts started,
promoted, paused, resumed or stopped, new rollout generations, phase and
threshold changes, artifacts added or changed, devices accepted or removed,
groups, configs, checks, keys and notifications changed, with the devices
each change reaches where the repository alone can tell, and changes to the
policies themselves (packs selected or dropped, policy files edited).

Both revisions are read from Git (never from the work tree) and may be
anything Git resolves: a branch, a tag, a SHA, HEAD~1, origin/main. The head
commit is also validated, and the plan starts with the result.

To see what a pull request would do, give its merge base as --base, or, in
CI on a merge commit, the target branch.

Formats: text (default), markdown (for a pull-request comment) and json.

The head's own policies/*.cue run under the budget --policy-timeout,
--policy-memory and --policy-output set (the controller's defaults); a
policy over it fails the head's validation, naming its file.

With --server (or GITFLEET_SERVER) and --token, the plan ends with how the
devices run each DeviceConfig of the commit that controller serves: in sync,
pending, drifted, failed (what a configuration change starts from).

The exit status is 0 when the plan was written and the head is valid, 1 when
the plan was written but the head fails validation, 2 on any other error.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if !slices.Contains(plan.Formats(), format) {
				return fmt.Errorf("--format: unknown format %q (want %s)", format, strings.Join(plan.Formats(), ", "))
			}
			if err := checkBudget(budget); err != nil {
				return err
			}
			repo, err := git.PlainOpenWithOptions(repoPath, &git.PlainOpenOptions{DetectDotGit: true})
			if err != nil {
				if errors.Is(err, git.ErrRepositoryNotExists) {
					return fmt.Errorf("%s is not in a Git repository", repoPath)
				}
				return fmt.Errorf("open %s: %w", repoPath, err)
			}
			p, err := plan.BetweenContext(cmd.Context(), repo, base, head, budget)
			if err != nil {
				return err
			}
			if mc.server != "" {
				if err := addConfigNow(cmd, &mc, p); err != nil {
					return err
				}
			}
			if err := p.Write(cmd.OutOrStdout(), format); err != nil {
				return err
			}
			if !p.Validation.OK() {
				return &exitError{code: 1, err: fmt.Errorf("head %s: validation %s", head, p.Validation.Summary())}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&repoPath, "repo", ".", "`path` of the Git repository (or a directory inside it)")
	f.StringVar(&base, "base", "", "`revision` the change is merged into, such as main or origin/main (required)")
	f.StringVar(&head, "head", "HEAD", "`revision` holding the change")
	f.StringVar(&format, "format", "text", "output `format`: text, markdown or json")
	addBudgetFlags(f, &budget)
	f.StringVar(&mc.server, "server", os.Getenv("GITFLEET_SERVER"), "controller URL: add how its devices run each DeviceConfig now (env GITFLEET_SERVER)")
	f.StringVar(&mc.token, "token", os.Getenv("GITFLEET_TOKEN"), "management API token, with --server (env GITFLEET_TOKEN)")
	f.StringVar(&mc.caCert, "ca-cert", os.Getenv("GITFLEET_CA_CERT"), "PEM file of the CA to trust for --server (env GITFLEET_CA_CERT)")
	cmd.MarkFlagRequired("base")
	return cmd
}

// addConfigNow asks the controller how its devices run each DeviceConfig.
func addConfigNow(cmd *cobra.Command, mc *mgmtClient, p *plan.Plan) error {
	var resp struct {
		Commit  string                     `json:"commit"`
		Configs []controller.ConfigSummary `json:"configs"`
	}
	if err := mc.get(cmd.Context(), "/api/management/v1/config", &resp); err != nil {
		return failed(fmt.Errorf("--server: %w", err))
	}
	p.ConfigCommit = resp.Commit
	for _, c := range resp.Configs {
		p.ConfigNow = append(p.ConfigNow, plan.ConfigStatus{Name: c.Name, Targets: c.Targets, InSync: c.InSync,
			Pending: c.Pending, Drifted: c.Drifted, Failed: c.Failed})
	}
	return nil
}
