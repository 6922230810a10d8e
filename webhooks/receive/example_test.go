package receive_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"time"

	"github.com/gitfleet/gitfleet/webhooks/receive"
)

// A controller mounts the receiver and turns triggers into fetches. Here a
// CI job announces a push with the generic provider.
func Example() {
	fetch := make(chan receive.Push, 1)
	h, err := receive.New(receive.Options{
		Secrets: map[receive.Provider]receive.Secret{
			receive.GitHub:  "github-secret",
			receive.Generic: "ci-secret",
		},
		Ref:          "main",
		Repositories: []string{"acme/fleet"},
		Trigger: func(ctx context.Context, p receive.Push) {
			select {
			case fetch <- p: // the fetch loop picks it up
			default: // a fetch is already pending; it will see this commit too
			}
		},
	})
	if err != nil {
		panic(err)
	}
	mux := http.NewServeMux()
	for _, rt := range h.Routes("/hooks") {
		mux.Handle(rt.Pattern, rt.Handler)
	}

	body := `{"ref":"refs/heads/main","after":"0c3f6a9d2e5b8c1f4a7d0e3b6c9f2a5d8e1b4c7f","repository":"acme/fleet"}`
	ts := strconv.FormatInt(time.Now().Unix(), 10)
	req := httptest.NewRequest(http.MethodPost, "/hooks/generic", strings.NewReader(body))
	req.Header.Set("X-Gitfleet-Timestamp", ts)
	req.Header.Set("X-Gitfleet-Delivery", "build-4711")
	req.Header.Set("X-Gitfleet-Signature", receive.SignGeneric("ci-secret", ts, "build-4711", []byte(body)))
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, req)

	fmt.Print(rec.Code, " ", rec.Body.String())
	p := <-fetch
	fmt.Println(p.Provider, p.Ref, p.After[:7])
	// Output:
	// 202 {"status":"triggered"}
	// generic refs/heads/main 0c3f6a9
}
