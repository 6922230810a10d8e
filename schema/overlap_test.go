package schema

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

// TestOverlapsIndex checks that the indexed overlap search finds exactly
// the pairs that comparing every pair with mayOverlap finds, on random
// fleets small enough for many attributes and values to collide.
func TestOverlapsIndex(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 11))
	pick := func(vals ...string) string { return vals[rng.IntN(len(vals))] }
	match := func() Match {
		switch rng.IntN(4) {
		case 0:
			return Match{Glob: pick("a*", "b?", "*")}
		case 1:
			return Match{In: []string{pick("a", "b", "c"), pick("a", "b", "c", "d")}}
		default:
			v := pick("a", "b", "c", "d")
			return Match{Equal: &v}
		}
	}
	selector := func() *Selector {
		s := &Selector{Identity: map[string]Match{}, Inventory: map[string]Match{}}
		for range rng.IntN(3) {
			s.Identity[pick("mac", "serial", "site")] = match()
		}
		for range rng.IntN(3) {
			s.Inventory[pick("device_type", "region")] = match()
		}
		return s
	}
	for iter := range 300 {
		ix := &index{devices: map[string]*Device{}, groups: map[string]*DeviceGroup{}}
		var names []string
		for i := range 12 {
			d := &Device{Spec: DeviceSpec{Identity: map[string]string{}}}
			for _, a := range []string{"mac", "serial", "site"} {
				if rng.IntN(3) > 0 {
					d.Spec.Identity[a] = pick("a", "b", "c", "d")
				}
			}
			if rng.IntN(2) == 0 {
				d.Spec.DeviceType = pick("a", "b", "pi")
			}
			name := fmt.Sprintf("d%d", i)
			ix.devices[name] = d
			names = append(names, name)
		}
		names = append(names, "undeclared")
		for i := range 4 {
			g := &DeviceGroup{}
			for range rng.IntN(3) {
				g.Spec.Members = append(g.Spec.Members, pick(names...))
			}
			if rng.IntN(2) == 0 {
				g.Spec.Selector = selector()
			}
			ix.groups[fmt.Sprintf("g%d", i)] = g
		}
		l := &loader{}
		var rs []*reach
		for range 1 + rng.IntN(15) {
			var t Target
			switch rng.IntN(8) {
			case 0:
				t.All = true
			case 1:
				// empty
			default:
				for range rng.IntN(3) {
					t.Devices = append(t.Devices, pick(names...))
				}
				for range rng.IntN(2) {
					t.Groups = append(t.Groups, pick("g0", "g1", "g2", "g3"))
				}
				if rng.IntN(2) == 0 {
					t.Selector = selector()
				}
			}
			r := l.reachOf(&t, ix)
			if rng.IntN(2) == 0 {
				r.deviceTypes = []string{pick("a", "b", "pi")}
			}
			rs = append(rs, &r)
		}
		var want, got []string
		for b := range rs {
			for a := range b {
				if why, ok := mayOverlap(rs[a], rs[b], ix); ok {
					want = append(want, fmt.Sprintf("%d-%d: %s", a, b, why))
				}
			}
		}
		overlaps(rs, ix, nil, func(a, b int, why string) {
			got = append(got, fmt.Sprintf("%d-%d: %s", a, b, why))
		})
		if !slices.Equal(got, want) {
			t.Fatalf("iteration %d: overlaps found\n%q\nwant\n%q", iter, got, want)
		}
	}
}

// BenchmarkOverlaps compares the indexed search with comparing every pair
// on 10,000 targets of one priority (or one config key): static groups of
// two devices, selectors on a site attribute, and devices, none of
// which overlap.
func BenchmarkOverlaps(b *testing.B) {
	ix := &index{devices: map[string]*Device{}, groups: map[string]*DeviceGroup{}}
	l := &loader{}
	var rs []*reach
	for i := range 10_000 {
		var t Target
		switch i % 3 {
		case 0:
			g := fmt.Sprintf("g%d", i)
			ix.groups[g] = &DeviceGroup{Spec: DeviceGroupSpec{Members: []string{fmt.Sprintf("d%d-0", i), fmt.Sprintf("d%d-1", i)}}}
			t.Groups = []string{g}
		case 1:
			site := fmt.Sprintf("site-%d", i)
			t.Selector = &Selector{Identity: map[string]Match{"site": {Equal: &site}}}
		case 2:
			t.Devices = []string{fmt.Sprintf("d%d", i)}
		}
		for _, d := range []string{fmt.Sprintf("d%d", i), fmt.Sprintf("d%d-0", i), fmt.Sprintf("d%d-1", i)} {
			ix.devices[d] = &Device{Spec: DeviceSpec{Identity: map[string]string{"mac": d, "site": fmt.Sprintf("site-%d", i)}, DeviceType: "pi"}}
		}
		r := l.reachOf(&t, ix)
		rs = append(rs, &r)
	}
	for _, n := range []int{1000, 10_000} {
		b.Run(fmt.Sprintf("indexed-%d", n), func(b *testing.B) {
			for b.Loop() {
				overlaps(rs[:n], ix, nil, func(a, b int, why string) { panic(why) })
			}
		})
	}
	// Every pair of 10,000 takes about 100 times as long as of 1,000:
	// nearly two minutes.
	b.Run("pairwise-1000", func(b *testing.B) {
		rs := rs[:1000]
		for b.Loop() {
			for j := range rs {
				for i := range j {
					if why, ok := mayOverlap(rs[i], rs[j], ix); ok {
						panic(why)
					}
				}
			}
		}
	})
}
