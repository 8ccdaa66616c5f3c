// Command benchratios reads the output of the benchmarks of this module, in
// the standard Go benchmark format, takes the median of every metric over
// all runs, and prints the ratios that BENCHMARKS.md judges, each with its
// target. The verdicts use the ratios of the medians.
//
// Each ratio is also printed as the median of its per-run values, pairing
// the results of the same run (the nth result of one benchmark with the nth
// of the other). Benchmarks of one run ran seconds apart, so the paired
// ratio is less sensitive to load from other programs that comes and goes
// between runs.
//
// Usage:
//
//	benchratios bench.txt
package main

import (
	"bufio"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// procSuffix is the "-N" that go test appends to benchmark names for
// GOMAXPROCS N.
var procSuffix = regexp.MustCompile(`-\d+$`)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: benchratios FILE")
		os.Exit(2)
	}
	runs, err := read(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchratios:", err)
		os.Exit(1)
	}
	m := medians(runs)
	if len(m) == 0 {
		fmt.Fprintln(os.Stderr, "benchratios: no benchmark results in", os.Args[1])
		os.Exit(1)
	}

	get := func(name, unit string) float64 {
		v, ok := m[name][unit]
		if !ok {
			fmt.Fprintf(os.Stderr, "benchratios: no %s for %s\n", unit, name)
			os.Exit(1)
		}
		return v
	}
	floorS := get("BenchmarkFloor/serial", "ns/op")
	normanS := get("BenchmarkNorman/serial", "ns/op")
	oauthS := get("BenchmarkOAuth2/serial", "ns/op")
	normanP := get("BenchmarkNorman/parallel", "ns/op")
	oauthP := get("BenchmarkOAuth2/parallel", "ns/op")
	normanAllocs := get("BenchmarkNorman/serial", "allocs/op")
	oauthAllocs := get("BenchmarkOAuth2/serial", "allocs/op")

	fmt.Printf("medians over %d runs\n\n", countRuns(runs, "BenchmarkNorman/serial"))
	fmt.Printf("%-28s %12s %10s %10s %14s\n", "benchmark", "ns/op", "B/op", "allocs/op", "req/s")
	for _, name := range order(m) {
		fmt.Printf("%-28s %12s %10s %10s %14s\n", name,
			num(m[name], "ns/op", 1), num(m[name], "B/op", 0), num(m[name], "allocs/op", 0), num(m[name], "req/s", 0))
	}

	fmt.Println()
	normanOver, oauthOver := normanS-floorS, oauthS-floorS
	fmt.Printf("hot-path overhead over the floor, serial: norman %.1f ns, oauth2 %.1f ns\n", normanOver, oauthOver)
	fmt.Printf("%-52s %-7s %-8s %-10s %s\n", "ratio", "medians", "paired", "target", "verdict (medians)")
	check("norman overhead / oauth2 overhead (serial)", normanOver/oauthOver,
		paired(runs, "%.2f", func(v func(string, string) float64) float64 {
			return (v("BenchmarkNorman/serial", "ns/op") - v("BenchmarkFloor/serial", "ns/op")) /
				(v("BenchmarkOAuth2/serial", "ns/op") - v("BenchmarkFloor/serial", "ns/op"))
		}), "%.2f", "<= 0.70", normanOver <= 0.7*oauthOver)
	check("norman allocs/op vs oauth2 allocs/op", normanAllocs, "-", "%.0f", fmt.Sprintf("<= %.0f", oauthAllocs), normanAllocs <= oauthAllocs)
	check("norman parallel / norman serial (ns/op)", normanP/normanS,
		paired(runs, "%.2f", ratioOf("BenchmarkNorman/parallel", "BenchmarkNorman/serial", "ns/op")),
		"%.2f", "<= 0.60", normanP <= 0.6*normanS)
	check("norman parallel / oauth2 parallel (ns/op)", normanP/oauthP,
		paired(runs, "%.2f", ratioOf("BenchmarkNorman/parallel", "BenchmarkOAuth2/parallel", "ns/op")),
		"%.2f", "<= 1.00", normanP <= oauthP)
	check("oauth2 parallel / oauth2 serial (ns/op, reference)", oauthP/oauthS,
		paired(runs, "%.2f", ratioOf("BenchmarkOAuth2/parallel", "BenchmarkOAuth2/serial", "ns/op")),
		"%.2f", "none", true)

	for _, mode := range []string{"serial", "parallel"} {
		bare := get("BenchmarkE2E/bare/"+mode, "req/s")
		withNorman := get("BenchmarkE2E/norman/"+mode, "req/s")
		check("e2e norman / bare req/s, "+mode, withNorman/bare,
			paired(runs, "%.3f", ratioOf("BenchmarkE2E/norman/"+mode, "BenchmarkE2E/bare/"+mode, "req/s")),
			"%.3f", ">= 0.95", withNorman >= 0.95*bare)
	}
}

// check prints one ratio: its value from the medians, its paired value and
// its target, and whether the median value meets the target.
func check(label string, value float64, pairedValue, format, target string, ok bool) {
	verdict := "not met"
	if ok {
		verdict = "met"
	}
	fmt.Printf("%-52s %-7s %-8s %-10s %s\n", label, fmt.Sprintf(format, value), pairedValue, target, verdict)
}

// ratioOf returns a paired-ratio function of unit: a over b.
func ratioOf(a, b, unit string) func(func(string, string) float64) float64 {
	return func(v func(string, string) float64) float64 { return v(a, unit) / v(b, unit) }
}

// paired computes f for every run, where f reads the values of that run
// through its argument, and formats the median of the results. It returns
// "-" when some run lacks a value that f needs.
func paired(runs []result, format string, f func(value func(name, unit string) float64) float64) string {
	byRun := map[int]map[string]map[string]float64{}
	seen := map[string]int{}
	for _, r := range runs {
		i := seen[r.name]
		seen[r.name]++
		if byRun[i] == nil {
			byRun[i] = map[string]map[string]float64{}
		}
		byRun[i][r.name] = r.values
	}

	var ratios []float64
	for i := 0; i < len(byRun); i++ {
		complete := true
		value := func(name, unit string) float64 {
			v, ok := byRun[i][name][unit]
			if !ok {
				complete = false
			}
			return v
		}
		ratio := f(value)
		if !complete {
			return "-"
		}
		ratios = append(ratios, ratio)
	}
	if len(ratios) == 0 {
		return "-"
	}
	return fmt.Sprintf(format, median(ratios))
}

// median returns the median of vs, which it sorts.
func median(vs []float64) float64 {
	slices.Sort(vs)
	n := len(vs)
	if n%2 == 1 {
		return vs[n/2]
	}
	return (vs[n/2-1] + vs[n/2]) / 2
}

// result is one line of benchmark output: metric values by unit.
type result struct {
	name   string
	values map[string]float64
}

func read(path string) ([]result, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()

	var out []result
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 4 || !strings.HasPrefix(fields[0], "Benchmark") || len(fields)%2 != 0 {
			continue
		}
		if _, err := strconv.Atoi(fields[1]); err != nil {
			continue
		}
		r := result{name: procSuffix.ReplaceAllString(fields[0], ""), values: map[string]float64{}}
		for i := 2; i+1 < len(fields); i += 2 {
			v, err := strconv.ParseFloat(fields[i], 64)
			if err != nil {
				continue
			}
			r.values[fields[i+1]] = v
		}
		out = append(out, r)
	}
	return out, sc.Err()
}

// medians returns, for every benchmark and unit, the median over runs.
func medians(runs []result) map[string]map[string]float64 {
	all := map[string]map[string][]float64{}
	for _, r := range runs {
		if all[r.name] == nil {
			all[r.name] = map[string][]float64{}
		}
		for unit, v := range r.values {
			all[r.name][unit] = append(all[r.name][unit], v)
		}
	}
	out := map[string]map[string]float64{}
	for name, units := range all {
		out[name] = map[string]float64{}
		for unit, vs := range units {
			out[name][unit] = median(vs)
		}
	}
	return out
}

func countRuns(runs []result, name string) int {
	n := 0
	for _, r := range runs {
		if r.name == name {
			n++
		}
	}
	return n
}

// order lists the benchmarks in a fixed order: the hot path first, then
// end to end.
func order(m map[string]map[string]float64) []string {
	names := make([]string, 0, len(m))
	for name := range m {
		names = append(names, name)
	}
	rank := func(name string) int {
		for i, prefix := range []string{"BenchmarkFloor/", "BenchmarkNorman/", "BenchmarkOAuth2/", "BenchmarkE2E/bare/", "BenchmarkE2E/norman/"} {
			if strings.HasPrefix(name, prefix) {
				return i
			}
		}
		return 99
	}
	slices.SortFunc(names, func(a, b string) int {
		if ra, rb := rank(a), rank(b); ra != rb {
			return ra - rb
		}
		return strings.Compare(b, a) // "serial" before "parallel"
	})
	return names
}

// num formats the median of unit, or "-" if the benchmark has none.
func num(values map[string]float64, unit string, decimals int) string {
	v, ok := values[unit]
	if !ok {
		return "-"
	}
	return strconv.FormatFloat(v, 'f', decimals, 64)
}
