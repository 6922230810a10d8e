package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

type driveOptions struct {
	mode   string // keepalive, h2, newconn, mtls
	target string // for the report
	addr   string
	// addrs, when set, are several servers (replicas behind a
	// round-robin balancer): client w polls addrs[w%len(addrs)].
	addrs []string
	// pki gives client certificates (mtls; every mode with pki.always)
	// to servers that ask.
	pki      *clientPKI
	ca       *x509.CertPool
	clients  int
	duration time.Duration
	warmup   time.Duration
	tokens   *tokens
	// stop, when not nil, ends the measurement when it is closed instead
	// of after duration (the rate is then over the time measured).
	stop <-chan struct{}
}

type result struct {
	mode, target  string
	polls, errors int64
	all           int64 // polls including the warm-up
	offered       int64 // polls answered 200 (a deployment), warm-up included
	conns         int64
	rate          float64
	measured      time.Duration
	p50, p99      time.Duration
	perAddr       []int64 // measured polls by addrs
	asked         int64   // handshakes in which the server asked for a client certificate
	cpuPerPoll    time.Duration
	cpu           time.Duration // gitfleet serve's CPU over the run

	// Of a combined result (combine): the median of the rounds' ratios
	// to the ceiling (set by the caller), and each round's.
	ratio  float64
	ratios []float64
}

// combine sums the rounds of one mode and target: polls/s over the time
// measured in all, the median p50 and the highest p99 of the rounds, the
// CPU per poll over all polls.
func combine(rs []result) result {
	out := rs[0]
	out.polls, out.errors, out.all, out.offered, out.conns, out.asked, out.measured, out.cpu = 0, 0, 0, 0, 0, 0, 0, 0
	var p50s []time.Duration
	for _, r := range rs {
		out.polls += r.polls
		out.errors += r.errors
		out.all += r.all
		out.offered += r.offered
		out.conns += r.conns
		out.asked += r.asked
		out.measured += r.measured
		out.cpu += r.cpu
		out.p99 = max(out.p99, r.p99)
		p50s = append(p50s, r.p50)
	}
	slices.Sort(p50s)
	out.p50 = p50s[len(p50s)/2]
	out.rate = float64(out.polls) / out.measured.Seconds()
	out.cpuPerPoll = out.cpu / time.Duration(max(out.all, 1))
	return out
}

// transport returns the client side of a mode, counting the connections
// it dials.
func transport(o driveOptions, dials *atomic.Int64) *http.Transport {
	d := &net.Dialer{Timeout: 5 * time.Second}
	t := &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: o.ca},
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			dials.Add(1)
			return d.DialContext(ctx, network, addr)
		},
		MaxIdleConnsPerHost: o.clients,
		TLSHandshakeTimeout: 5 * time.Second,
	}
	switch o.mode {
	case "keepalive":
		t.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{} // HTTP/1.1 only
	case "h2":
		t.ForceAttemptHTTP2 = true
	case "newconn", "mtls":
		// A full TLS handshake per poll: no keep-alive, no session
		// resumption (the client keeps no session cache).
		t.DisableKeepAlives = true
		t.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	}
	if o.pki != nil && (o.mode == "mtls" || o.pki.always) {
		t.TLSClientConfig.GetClientCertificate = o.pki.getClientCertificate
	}
	return t
}

// drive polls o.addr from o.clients goroutines, each poll for a random
// device, for o.warmup (not measured) and then o.duration or until o.stop
// is closed.
func drive(ctx context.Context, o driveOptions) (result, error) {
	var dials atomic.Int64
	tr := transport(o, &dials)
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	addrs := o.addrs
	if len(addrs) == 0 {
		addrs = []string{o.addr}
	}
	perAddr := make([]atomic.Int64, len(addrs))
	var asked0 int64
	if o.pki != nil {
		asked0 = o.pki.asked.Load()
	}
	measureFrom := time.Now().Add(o.warmup)
	var endNano atomic.Int64 // when the measurement ends
	endNano.Store(measureFrom.Add(o.duration).UnixNano())
	if o.stop != nil {
		endNano.Store(math.MaxInt64)
		done := make(chan struct{})
		defer close(done)
		go func() {
			select {
			case <-o.stop:
				endNano.Store(max(time.Now().UnixNano(), measureFrom.UnixNano()+1))
			case <-done:
			}
		}()
	}
	ended := func(t time.Time) bool { return t.UnixNano() > endNano.Load() }
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		lat      []time.Duration
		errs     atomic.Int64
		firstErr atomic.Value
		proto    atomic.Int64
		total    atomic.Int64
		offered  atomic.Int64
	)
	for w := range o.clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), uint64(time.Now().UnixNano())))
			base := "https://" + addrs[w%len(addrs)]
			var n int64
			mine := make([]time.Duration, 0, 1<<14)
			for {
				t0 := time.Now()
				if ended(t0) || ctx.Err() != nil {
					break
				}
				tok := o.tokens.all[rng.IntN(len(o.tokens.all))]
				req, _ := http.NewRequestWithContext(ctx, http.MethodPost, base+"/api/devices/v2/deployments/device/deployments/next", bytes.NewReader(nextBody))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("Authorization", "Bearer "+tok)
				resp, err := client.Do(req)
				total.Add(1)
				if err == nil {
					_, err = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
					resp.Body.Close()
					proto.Store(int64(resp.ProtoMajor))
					if err == nil && resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusNoContent {
						err = fmt.Errorf("%s", resp.Status)
					}
					if err == nil && resp.StatusCode == http.StatusOK {
						offered.Add(1)
					}
				}
				if err != nil {
					errs.Add(1)
					firstErr.CompareAndSwap(nil, err)
					continue
				}
				if !t0.Before(measureFrom) && !ended(time.Now()) {
					mine = append(mine, time.Since(t0))
					n++
				}
			}
			perAddr[w%len(addrs)].Add(n)
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return result{}, err
	}
	r := result{mode: o.mode, target: o.target, polls: int64(len(lat)), errors: errs.Load(), conns: dials.Load(), all: total.Load(), offered: offered.Load()}
	for i := range perAddr {
		r.perAddr = append(r.perAddr, perAddr[i].Load())
	}
	if o.pki != nil {
		r.asked = o.pki.asked.Load() - asked0
	}
	if want := int64(2); o.mode == "h2" && proto.Load() != want {
		return r, fmt.Errorf("%s %s: answered over HTTP/%d, not HTTP/2", o.mode, o.target, proto.Load())
	}
	if r.polls == 0 || r.errors*100 > r.polls {
		return r, fmt.Errorf("%s %s: %d polls, %d errors (first: %v)", o.mode, o.target, r.polls, r.errors, firstErr.Load())
	}
	slices.Sort(lat)
	r.measured = time.Duration(endNano.Load() - measureFrom.UnixNano())
	r.rate = float64(r.polls) / r.measured.Seconds()
	r.p50 = lat[len(lat)/2]
	r.p99 = lat[min(len(lat)-1, len(lat)*99/100)]
	return r, nil
}
