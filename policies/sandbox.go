package policies

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"cuelang.org/go/cue/parser"

	"github.com/gitfleet/gitfleet/schema"
)

// The repository's own policy files are evaluated in a child process: the
// running binary started again (from /proc/self/exe on Linux, so a binary
// replaced on disk by an upgrade still starts as itself) with childEnv
// set, which makes this package's init function serve one evaluation
// instead of running the program. Any program that links this package
// (gitfleet, its tests) can therefore evaluate policies.
//
// The parent writes one request (the policy files and the collections of
// the fleet they refer to) to the child's standard input; the child writes
// one result per file, in order, as JSON values on its standard output, so
// that when it has to be stopped the parent knows which file was running.
// The child limits its own address space and CPU time first (setrlimit),
// runs with GOMAXPROCS=1 and an environment holding nothing of the
// parent's, and dies with its parent. The parent kills it when the time
// budget runs out, and stops reading (and kills it) past the output
// budget.
const (
	childEnv    = "GITFLEET_POLICY_EVALUATOR"
	childMode   = "v1"
	childMemEnv = "GITFLEET_POLICY_EVALUATOR_MEMORY" // bytes
	childCPUEnv = "GITFLEET_POLICY_EVALUATOR_CPU"    // seconds
	childArgv0  = "gitfleet-policy-eval"             // what ps shows
)

func init() {
	if os.Getenv(childEnv) == childMode {
		os.Exit(serveChild(os.Stdin, os.Stdout))
	}
}

// ErrEvaluator is wrapped by the errors of a policy evaluator that could
// not be started or failed for a reason of its own (not of the policies):
// worth retrying, not a reason to refuse a commit.
var ErrEvaluator = errors.New("policies: evaluator failed")

// A childRequest is what the parent sends.
type childRequest struct {
	Files []childFile                           `json:"files"`
	Fleet map[string]map[string]json.RawMessage `json:"fleet"` // collection → name → manifest
}

type childFile struct {
	File string `json:"file"`
	Src  []byte `json:"src"`
}

// A childResult is what the child says about one file.
type childResult struct {
	File       string      `json:"file"`
	Violations []Violation `json:"violations"`
	Errors     []errorJSON `json:"errors"`
}

// serveChild evaluates the request read from r, writing results to w.
func serveChild(r io.Reader, w io.Writer) int {
	limitSelf()
	var req childRequest
	if err := json.NewDecoder(r).Decode(&req); err != nil {
		fmt.Fprintf(os.Stderr, "%s: read request: %v\n", childArgv0, err)
		return 3
	}
	ev := newEvaluator(func(c string) (map[string]json.RawMessage, error) { return req.Fleet[c], nil })
	seen := make(map[string]string)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	for _, f := range req.Files {
		vs, errs := ev.runSafe(policyFile{file: f.File, src: f.Src}, seen)
		res := childResult{File: f.File, Violations: vs, Errors: []errorJSON{}}
		for _, e := range errs {
			res.Errors = append(res.Errors, errorJSON{e.File, e.Line, e.Col, e.Path, e.Msg})
		}
		if err := enc.Encode(res); err != nil {
			return 3 // the parent stopped reading
		}
	}
	return 0
}

// runSafe is run, with a panic in the CUE evaluator reported as an error
// in the file instead of ending the process.
func (ev *evaluator) runSafe(f policyFile, seen map[string]string) (vs []Violation, errs schema.Errors) {
	defer func() {
		if r := recover(); r != nil {
			vs, errs = nil, schema.Errors{{File: f.file, Msg: fmt.Sprintf("internal error in the policy evaluator (please report it): %v", r)}}
		}
	}()
	return ev.run(f, seen)
}

// sandbox evaluates files, the repository's own, in a child process under
// budget b against fleet (whose manifests' positions the caller fills
// in, see locate). A policy file over budget, or on which the child died,
// is one of errs. err is ctx's error when ctx ended first, or wraps
// ErrEvaluator when the child could not be started.
func sandbox(ctx context.Context, files []policyFile, fleet *schema.Fleet, metas map[manifestRef]*schema.Meta, b Budget) (vs []Violation, errs schema.Errors, err error) {
	b = b.withDefaults()
	req, err := request(files, fleet, metas)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %w", ErrEvaluator, err)
	}

	cpuLimit := b.Time.Truncate(time.Second) + 2*time.Second
	tctx, cancel := context.WithTimeout(ctx, b.Time)
	defer cancel()
	cmd := exec.CommandContext(tctx, executable())
	cmd.Args = []string{childArgv0}
	cmd.Dir = "/"
	cmd.Env = []string{
		childEnv + "=" + childMode,
		childMemEnv + "=" + strconv.FormatInt(b.Memory, 10),
		// A backstop should the parent fail to kill it: the kernel does
		// past the CPU time the wall-clock budget allows.
		childCPUEnv + "=" + strconv.FormatInt(int64(cpuLimit/time.Second), 10),
		"GOMAXPROCS=1",
		"GOTRACEBACK=none",
	}
	cmd.SysProcAttr = childAttr()
	cmd.WaitDelay = time.Second
	var stderr tailBuffer
	cmd.Stderr = &stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %w", ErrEvaluator, err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %w", ErrEvaluator, err)
	}
	if err := cmd.Start(); err != nil {
		return nil, nil, fmt.Errorf("%w: start: %w", ErrEvaluator, err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		stdin.Write(req) // fails only when the child is gone, which Wait reports
		stdin.Close()
	})

	out := &countingReader{r: io.LimitReader(stdout, b.Output+1)}
	dec := json.NewDecoder(out)
	var results []childResult
	var protoErr error
	for len(results) < len(files) {
		var res childResult
		if err := dec.Decode(&res); err != nil {
			if !errors.Is(err, io.EOF) && out.n <= b.Output && tctx.Err() == nil {
				protoErr = err
			}
			break
		}
		if res.File != files[len(results)].file {
			protoErr = fmt.Errorf("result for %q, want %q", res.File, files[len(results)].file)
			break
		}
		results = append(results, res)
	}
	overOutput := out.n > b.Output
	if overOutput || protoErr != nil || len(results) < len(files) {
		cmd.Cancel() // kill it now: it has nothing more to say
	}
	waitErr := cmd.Wait()
	wg.Wait()

	for _, res := range results {
		for i := range res.Violations {
			if res.Violations[i].Severity != Warn {
				res.Violations[i].Severity = Deny
			}
		}
		vs = append(vs, res.Violations...)
		for _, e := range res.Errors {
			errs = append(errs, &schema.Error{File: e.File, Line: e.Line, Col: e.Col, Path: e.Path, Msg: e.Message})
		}
	}
	if len(results) == len(files) {
		return vs, errs, nil // what happened after the last result is of no interest
	}
	if ctx.Err() != nil {
		return nil, nil, ctx.Err()
	}
	// Whatever stopped the child happened while it evaluated this file:
	// the file is refused (never retried as if the failure were
	// transient, which would stall following Git on this commit).
	at := files[len(results)].file
	var msg string
	switch {
	case overOutput:
		msg = (&BudgetError{File: at, What: "output", Limit: formatBytes(b.Output), Flag: "--policy-output"}).Error()
	case tctx.Err() != nil || cpuTime(cmd.ProcessState) >= cpuLimit-time.Second:
		msg = (&BudgetError{File: at, What: "time", Limit: b.Time.String(), Flag: "--policy-timeout"}).Error()
	case stderr.has("out of memory", "cannot allocate memory", "pthread_create failed", "failed to create new OS thread", "stack overflow"):
		msg = (&BudgetError{File: at, What: "memory", Limit: formatBytes(b.Memory), Flag: "--policy-memory"}).Error()
	case protoErr != nil:
		msg = fmt.Sprintf("the policy evaluator stopped on this file with unreadable output (%v); please report it", protoErr)
	default:
		msg = fmt.Sprintf("the policy evaluator stopped on this file (%v%s); please report it", waitErr, stderr.summary())
	}
	errs = append(errs, &schema.Error{File: at, Msg: msg})
	for _, f := range files[len(results)+1:] {
		errs = append(errs, &schema.Error{File: f.file, Msg: fmt.Sprintf("not evaluated: %s went over its budget first", at)})
	}
	return vs, errs, nil
}

// cpuTime returns the CPU time the child used, 0 if unknown.
func cpuTime(ps *os.ProcessState) time.Duration {
	if ps == nil {
		return 0
	}
	return ps.UserTime() + ps.SystemTime()
}

// request encodes the request for files: the files, and the collections
// of fleet they refer to.
func request(files []policyFile, fleet *schema.Fleet, metas map[manifestRef]*schema.Meta) ([]byte, error) {
	req := childRequest{Fleet: map[string]map[string]json.RawMessage{}}
	need := map[string]bool{}
	for _, f := range files {
		req.Files = append(req.Files, childFile{File: f.file, Src: f.src})
		// A file that does not parse needs nothing: the child reports it.
		if syntax, err := parser.ParseFile(f.file, f.src); err == nil {
			used, all := collectionsUsed(syntax)
			for _, k := range schema.Kinds() {
				if c := collection(k); all || used[c] {
					need[c] = true
				}
			}
		}
	}
	docs := fleetCollections(fleet, metas)
	for _, c := range slices.Sorted(maps.Keys(need)) {
		m, err := docs(c)
		if err != nil {
			return nil, err
		}
		req.Fleet[c] = m
	}
	return json.Marshal(req)
}

// executable returns the path that starts this program again.
func executable() string {
	if runtime.GOOS == "linux" {
		return "/proc/self/exe"
	}
	p, err := os.Executable()
	if err != nil {
		return os.Args[0]
	}
	return p
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// tailBuffer keeps the first and the last KiBs written to it: of a
// child's standard error, where the runtime says why it died (a fatal
// error's first line, then a stack trace).
type tailBuffer struct {
	mu   sync.Mutex
	head []byte
	b    []byte // the tail
}

const tailSize = 2 << 10

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := len(p)
	if room := tailSize - len(t.head); room > 0 {
		k := min(room, len(p))
		t.head = append(t.head, p[:k]...)
		p = p[k:]
	}
	t.b = append(t.b, p...)
	if len(t.b) > tailSize {
		t.b = append(t.b[:0], t.b[len(t.b)-tailSize:]...)
	}
	return n, nil
}

func (t *tailBuffer) has(subs ...string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, s := range subs {
		if bytes.Contains(t.head, []byte(s)) || bytes.Contains(t.b, []byte(s)) {
			return true
		}
	}
	return false
}

// summary returns the first line of what the child wrote, for an error
// message, or "".
func (t *tailBuffer) summary() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	s, _, _ := strings.Cut(strings.TrimSpace(string(t.head)), "\n")
	if s == "" {
		return ""
	}
	if len(s) > 200 {
		s = s[:200]
	}
	return ": " + s
}
