package main

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

// TestTemplateCICommands checks that every gitfleet command line in the
// fleet repository template's CI files names a real command with flags it
// accepts, so renaming a flag cannot silently break the teams that copied
// the template.
func TestTemplateCICommands(t *testing.T) {
	// A command outside a comment, up to a redirection, a pipe or the
	// end of the line.
	line := regexp.MustCompile(`(?m)^[^#\n]*?\bgitfleet ((?:validate|plan)\s[^>|\n]*)`)
	for _, file := range []string{
		"../../fleet-repo-template/.github/workflows/gitfleet.yml",
		"../../fleet-repo-template/.gitlab-ci.yml",
	} {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		seen := map[string]bool{}
		for _, m := range line.FindAllStringSubmatch(string(data), -1) {
			args := strings.Fields(strings.ReplaceAll(m[1], `"`, ""))
			cmd, rest, err := newRootCmd().Find(args)
			if err != nil {
				t.Errorf("%s: gitfleet %s: %v", file, m[1], err)
				continue
			}
			if err := cmd.ParseFlags(rest); err != nil {
				t.Errorf("%s: gitfleet %s: %v", file, m[1], err)
			}
			seen[cmd.Name()] = true
			if cmd.Name() == "plan" && !strings.Contains(m[1], "--format markdown") {
				t.Errorf("%s: gitfleet %s: the plan comment needs --format markdown", file, m[1])
			}
		}
		if !seen["validate"] || !seen["plan"] {
			t.Errorf("%s runs %v, want validate and plan", file, seen)
		}
		// CI runs a pinned gitfleet (the controller's version), never
		// whatever is newest.
		if strings.Contains(string(data), "@latest") {
			t.Errorf("%s installs gitfleet@latest; pin GITFLEET_VERSION", file)
		}
		pin := regexp.MustCompile(`(?m)^\s*GITFLEET_VERSION: (v[0-9]+\.[0-9]+\.[0-9]+)\s*$`).FindStringSubmatch(string(data))
		if pin == nil || !strings.Contains(string(data), "cmd/gitfleet@${GITFLEET_VERSION}") && !strings.Contains(string(data), "cmd/gitfleet@$GITFLEET_VERSION") {
			t.Errorf("%s: want a GITFLEET_VERSION: vX.Y.Z pin that the install line uses", file)
		}
	}
}
