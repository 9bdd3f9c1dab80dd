package bench

import (
	"fmt"
	"html"
	"io"
	"math"
	"slices"
	"strings"
)

// svgPalette colours a strategy; the backend is told apart by shade.
var svgPalette = map[string][2]string{ // strategy → {rueidis, goredis}
	"lua":      {"#1f5fa8", "#7fb0e6"},
	"batch":    {"#2a8a3a", "#8fd19b"},
	"pipeline": {"#c2561a", "#f2ad82"},
}

func svgColor(backend, strategy string, i int) string {
	p, ok := svgPalette[strategy]
	if !ok {
		p = [2]string{"#6a4c93", "#b8a1d9"}
	}
	if backend == "goredis" {
		return p[1]
	}
	if backend != "rueidis" && i%2 == 1 {
		return p[1]
	}
	return p[0]
}

// WriteSVG renders the saturation rows as two grouped bar charts, one
// group per concurrency and one bar per backend × strategy: throughput,
// with the ceiling as a dashed line, and p99 latency on a log scale.
func WriteSVG(w io.Writer, rows []Row, ceiling float64, title string) error {
	type series struct{ backend, strategy string }
	var ss []series
	var concs []int
	vals := map[series]map[int]Row{}
	for _, r := range rows {
		if r.Table != TableHeartbeat || r.Backend == BackendRaw {
			continue
		}
		s := series{r.Backend, r.Strategy}
		if vals[s] == nil {
			vals[s] = map[int]Row{}
			ss = append(ss, s)
		}
		vals[s][r.Concurrency] = r
		if !slices.Contains(concs, r.Concurrency) {
			concs = append(concs, r.Concurrency)
		}
	}
	slices.Sort(concs)
	order := map[string]int{"lua": 0, "batch": 1, "pipeline": 2}
	slices.SortStableFunc(ss, func(a, b series) int {
		oa, oka := order[a.strategy]
		ob, okb := order[b.strategy]
		if !oka {
			oa = 9
		}
		if !okb {
			ob = 9
		}
		if oa != ob {
			return oa - ob
		}
		return strings.Compare(b.backend, a.backend) // rueidis before goredis
	})
	if len(ss) == 0 || len(concs) == 0 {
		return fmt.Errorf("bench: no heartbeat rows to chart")
	}

	const (
		width, left, right = 1000, 80, 20
		panelH, top, gap   = 300, 70, 90
		legendH            = 30 * 2
	)
	plotW := float64(width - left - right)
	height := top + 2*panelH + gap + legendH + 40
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="Helvetica, Arial, sans-serif" font-size="12">`+"\n", width, height, width, height)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="#ffffff"/>`+"\n")
	fmt.Fprintf(&b, `<text x="%d" y="28" font-size="17" font-weight="bold">%s</text>`+"\n", left, html.EscapeString(title))

	groupW := plotW / float64(len(concs))
	barW := groupW * 0.8 / float64(len(ss))
	barX := func(gi, si int) float64 { return float64(left) + float64(gi)*groupW + groupW*0.1 + float64(si)*barW }

	// Panel 1: throughput.
	y0 := float64(top)
	maxV := ceiling
	for _, s := range ss {
		for _, r := range vals[s] {
			maxV = math.Max(maxV, r.OpsPerSec)
		}
	}
	maxV = niceCeil(maxV * 1.08)
	yOf := func(v float64) float64 { return y0 + panelH - v/maxV*panelH }
	fmt.Fprintf(&b, `<text x="%d" y="%.0f" font-size="14" font-weight="bold">Heartbeat throughput (ops/s, closed loop)</text>`+"\n", left, y0-12)
	for i := 0; i <= 5; i++ {
		v := maxV * float64(i) / 5
		y := yOf(v)
		fmt.Fprintf(&b, `<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#e3e3e3"/>`+"\n", left, width-right, y, y)
		fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end" fill="#555">%s</text>`+"\n", left-6, y+4, short(v))
	}
	for gi, c := range concs {
		for si, s := range ss {
			r, ok := vals[s][c]
			if !ok {
				continue
			}
			x, y := barX(gi, si), yOf(r.OpsPerSec)
			fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"><title>%s %s, %d connections: %.0f ops/s</title></rect>`+"\n",
				x, y, barW-2, y0+panelH-y, svgColor(s.backend, s.strategy, si), s.backend, s.strategy, c, r.OpsPerSec)
			fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle" font-size="9" fill="#333">%s</text>`+"\n", x+(barW-2)/2, y-3, short(r.OpsPerSec))
		}
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle">%d connections</text>`+"\n", float64(left)+float64(gi)*groupW+groupW/2, y0+panelH+18, c)
	}
	if ceiling > 0 {
		y := yOf(ceiling)
		fmt.Fprintf(&b, `<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#b00020" stroke-width="1.5" stroke-dasharray="6 4"/>`+"\n", left, width-right, y, y)
		fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end" fill="#b00020">ceiling: raw pipelined EVALSHA of heartbeat.lua, %s ops/s</text>`+"\n", width-right-4, y-5, short(ceiling))
	}
	fmt.Fprintf(&b, `<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#333"/>`+"\n", left, width-right, y0+panelH, y0+panelH)

	// Panel 2: p99 latency, log scale.
	y0 = float64(top + panelH + gap)
	lo, hi := math.Inf(1), 0.0
	for _, s := range ss {
		for _, r := range vals[s] {
			if r.P99Ms > 0 {
				lo, hi = math.Min(lo, r.P99Ms), math.Max(hi, r.P99Ms)
			}
		}
	}
	if hi == 0 {
		lo, hi = 0.1, 1
	}
	dLo := math.Pow(10, math.Floor(math.Log10(lo)))
	dHi := math.Pow(10, math.Ceil(math.Log10(hi)))
	if dHi <= dLo {
		dHi = dLo * 10
	}
	yLog := func(v float64) float64 {
		v = math.Max(v, dLo)
		return y0 + panelH - (math.Log10(v)-math.Log10(dLo))/(math.Log10(dHi)-math.Log10(dLo))*panelH
	}
	fmt.Fprintf(&b, `<text x="%d" y="%.0f" font-size="14" font-weight="bold">Heartbeat p99 latency (ms, log scale)</text>`+"\n", left, y0-12)
	for d := dLo; d <= dHi*1.001; d *= 10 {
		y := yLog(d)
		fmt.Fprintf(&b, `<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#e3e3e3"/>`+"\n", left, width-right, y, y)
		fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end" fill="#555">%s</text>`+"\n", left-6, y+4, strings.TrimSuffix(fmt.Sprintf("%g", d), ".0"))
	}
	for gi, c := range concs {
		for si, s := range ss {
			r, ok := vals[s][c]
			if !ok || r.P99Ms <= 0 {
				continue
			}
			x, y := barX(gi, si), yLog(r.P99Ms)
			fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"><title>%s %s, %d connections: p99 %.2f ms</title></rect>`+"\n",
				x, y, barW-2, y0+panelH-y, svgColor(s.backend, s.strategy, si), s.backend, s.strategy, c, r.P99Ms)
			fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle" font-size="9" fill="#333">%s</text>`+"\n", x+(barW-2)/2, y-3, ms(r.P99Ms))
		}
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle">%d connections</text>`+"\n", float64(left)+float64(gi)*groupW+groupW/2, y0+panelH+18, c)
	}
	fmt.Fprintf(&b, `<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#333"/>`+"\n", left, width-right, y0+panelH, y0+panelH)

	// Legend.
	ly := float64(top + 2*panelH + gap + 45)
	nb := 0 // backends: one legend row each, one column per strategy
	seen := map[string]bool{}
	for _, s := range ss {
		if !seen[s.backend] {
			seen[s.backend] = true
			nb++
		}
	}
	per := (width - left - right) / max(1, (len(ss)+nb-1)/nb)
	for si, s := range ss {
		x := float64(left + (si/nb)*per)
		y := ly + float64(si%nb)*22
		fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="14" height="14" fill="%s"/>`+"\n", x, y-11, svgColor(s.backend, s.strategy, si))
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f">%s · %s</text>`+"\n", x+20, y, html.EscapeString(s.backend), html.EscapeString(s.strategy))
	}
	b.WriteString("</svg>\n")
	_, err := io.WriteString(w, b.String())
	return err
}

// niceCeil rounds v up to a round number: 1, 1.5, 2, 2.5, 3, 4, 5, 6 or 8
// times a power of ten.
func niceCeil(v float64) float64 {
	if v <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10} {
		if m*p >= v {
			return m * p
		}
	}
	return 10 * p
}

// short formats a count as 950, 12.3k or 1.2M.
func short(v float64) string {
	switch {
	case v >= 1e6:
		return fmt.Sprintf("%.1fM", v/1e6)
	case v >= 1e4:
		return fmt.Sprintf("%.0fk", v/1e3)
	case v >= 1e3:
		return fmt.Sprintf("%.1fk", v/1e3)
	}
	return fmt.Sprintf("%.0f", v)
}
