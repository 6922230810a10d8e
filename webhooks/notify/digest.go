package notify

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// digest summarises a batch for a human: counts by kind, the first events
// in full, and how many were left out or dropped.
type digest struct {
	events  []Event
	dropped uint64
	listed  int // events shown in full
}

// counts returns "N kind" parts, most frequent first, ties in schema order.
func (d digest) counts() []string {
	n := map[Kind]int{}
	for _, e := range d.events {
		n[e.Kind]++
	}
	ks := make([]Kind, 0, len(n))
	for _, k := range kinds {
		if n[k] > 0 {
			ks = append(ks, k)
		}
	}
	slices.SortStableFunc(ks, func(a, b Kind) int { return n[b] - n[a] })
	out := make([]string, len(ks))
	for i, k := range ks {
		out[i] = fmt.Sprintf("%d %s", n[k], k)
	}
	return out
}

// title is a one-line summary: the event itself when there is one, else
// the counts.
func (d digest) title() string {
	if len(d.events) == 1 && d.dropped == 0 {
		e := d.events[0]
		if s := e.subject(); s != "" {
			return string(e.Kind) + ": " + s
		}
		return string(e.Kind)
	}
	t := fmt.Sprintf("%d events: %s", len(d.events), strings.Join(d.counts(), ", "))
	if d.dropped > 0 {
		t += fmt.Sprintf(" (+%d dropped)", d.dropped)
	}
	return t
}

// line is one event on one line.
func line(e Event) string {
	var b strings.Builder
	b.WriteString(e.Time.UTC().Format(time.RFC3339))
	b.WriteString(" ")
	b.WriteString(string(e.Kind))
	if s := e.subject(); s != "" {
		b.WriteString(" ")
		b.WriteString(s)
	}
	return b.String()
}

// full is one event with its details, for a mail body.
func full(e Event) string {
	var b strings.Builder
	b.WriteString(line(e))
	b.WriteString("\n")
	if e.Commit != "" {
		fmt.Fprintf(&b, "    commit: %s\n", oneLine(e.Commit))
	}
	keys := make([]string, 0, len(e.Details))
	for k := range e.Details {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, "    %s: %s\n", oneLine(k), oneLine(e.Details[k]))
	}
	fmt.Fprintf(&b, "    id: %s\n", e.ID)
	return b.String()
}

// text is the plain-text body of a digest mail.
func (d digest) text() string {
	var b strings.Builder
	fmt.Fprintf(&b, "Gitfleet: %d event(s)", len(d.events))
	if len(d.events) > 0 {
		first, last := d.events[0].Time.UTC(), d.events[len(d.events)-1].Time.UTC()
		fmt.Fprintf(&b, " from %s to %s", first.Format(time.RFC3339), last.Format(time.RFC3339))
	}
	b.WriteString(".\n\n")
	for _, c := range d.counts() {
		fmt.Fprintf(&b, "  %s\n", c)
	}
	if d.dropped > 0 {
		fmt.Fprintf(&b, "\n%d more event(s) were dropped because the notification queue was full.\n", d.dropped)
	}
	b.WriteString("\n")
	shown := min(d.listed, len(d.events))
	for _, e := range d.events[:shown] {
		b.WriteString(full(e))
		b.WriteString("\n")
	}
	if rest := len(d.events) - shown; rest > 0 {
		fmt.Fprintf(&b, "… and %d more event(s) not listed here.\n", rest)
	}
	return b.String()
}

// slack is the text of a Slack message (mrkdwn).
func (d digest) slack() string {
	var b strings.Builder
	if len(d.events) == 1 && d.dropped == 0 {
		e := d.events[0]
		fmt.Fprintf(&b, "*Gitfleet* %s", slackEscape(line(e)))
		for _, k := range sortedKeys(e.Details) {
			fmt.Fprintf(&b, "\n> %s: %s", slackEscape(oneLine(k)), slackEscape(oneLine(e.Details[k])))
		}
		return b.String()
	}
	fmt.Fprintf(&b, "*Gitfleet: %s*", slackEscape(d.title()))
	shown := min(d.listed, len(d.events))
	for _, e := range d.events[:shown] {
		fmt.Fprintf(&b, "\n• %s", slackEscape(line(e)))
	}
	if rest := len(d.events) - shown; rest > 0 {
		fmt.Fprintf(&b, "\n… and %d more", rest)
	}
	return b.String()
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// slackEscape escapes the three characters Slack's mrkdwn requires, so
// that a device name or evidence line cannot form a link or a mention.
func slackEscape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(s)
}
