// Package bench compares the cost of norman.Transport with that of
// golang.org/x/oauth2's Transport and with no authentication at all.
//
// The benchmarks in this package measure the hot path (a fresh token,
// no I/O) and loopback throughput. The commands under cmd measure token
// refresh under load (refreshload) and a crowd of callers on a cold or
// expired token (storm). The script run executes all of them; see
// BENCHMARKS.md at the repository root for the results.
//
// This is its own module so that importers of the library never download
// golang.org/x/oauth2.
package bench
