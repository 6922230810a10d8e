package notifier

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/gitfleet/gitfleet/schema"
)

// docs/notifications.md lists every event of the schema, in its order,
// and nothing else.
func TestDocsListEveryEvent(t *testing.T) {
	b, err := os.ReadFile("../../docs/notifications.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(b), "\n## Events\n")
	if !ok {
		t.Fatal("docs/notifications.md has no ## Events section")
	}
	section, _, _ = strings.Cut(section, "\n## ")
	var listed []string
	for _, m := range regexp.MustCompile("(?m)^\\| `([a-z_.]+)` \\|").FindAllStringSubmatch(section, -1) {
		listed = append(listed, m[1])
	}
	if want := schema.Events(); !slices.Equal(listed, want) {
		t.Errorf("the docs' event table lists\n%q\nthe schema's #Event is\n%q", listed, want)
	}
}
